"""A scripted peer for the pure ``LocalProtocol``: a fake clock, client events in, engine results in, and the effects
it asks for taken one by one, in order, each of the kind the test expects. An effect the test did not take fails it
(``done``), so a test cannot pass while the protocol asks for work nobody checked. No asyncio, no sleeps."""

from __future__ import annotations

import base64
import collections
import json
from typing import Any, TypeVar

from session_fakes import EnergyVad

from parley.local.effects import Effect, Out
from parley.local.options import ProtocolOptions
from parley.local.protocol import LocalProtocol
from parley.realtime.audio import BYTES_PER_MS

E = TypeVar("E", bound=Effect)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.p = LocalProtocol(
            vad_factory=EnergyVad,
            voices=["en_US-joe-medium"],
            options=ProtocolOptions(**options),
            clock=self.clock,
        )
        self.events: list[dict[str, Any]] = []
        self._effects: collections.deque[Effect] = collections.deque()
        self.run(self.p.created())

    def run(self, outs: list[Out]) -> list[dict[str, Any]]:
        """Record what a step returned; its events (also kept in ``events``)."""
        new = [o for o in outs if isinstance(o, dict)]
        self.events += new
        self._effects.extend(o for o in outs if not isinstance(o, dict))
        return new

    def send(self, **event: Any) -> list[dict[str, Any]]:
        return self.run(self.p.receive(json.dumps(event)))

    def update(self, **session: Any) -> list[dict[str, Any]]:
        return self.send(type="session.update", session={"type": "realtime", **session})

    def append(self, pcm: bytes, chunk_ms: int = 100) -> list[dict[str, Any]]:
        """Stream audio in ``chunk_ms`` appends at real-time pace on the fake clock, ticking what falls due."""
        out: list[dict[str, Any]] = []
        step = chunk_ms * BYTES_PER_MS
        for off in range(0, len(pcm), step):
            chunk = pcm[off : off + step]
            out += self.send(type="input_audio_buffer.append", audio=base64.b64encode(chunk).decode())
            out += self.advance(len(chunk) / BYTES_PER_MS / 1000.0)
        return out

    def advance(self, seconds: float) -> list[dict[str, Any]]:
        """Let ``seconds`` pass, ticking the protocol at each deadline that falls due (as the connection does)."""
        end = self.clock.now + seconds
        out: list[dict[str, Any]] = []
        while (due := self.p.next_deadline()) is not None and due <= end:
            self.clock.now = max(self.clock.now, due)
            out += self.run(self.p.tick())
        self.clock.now = end
        return out

    def take(self, kind: type[E]) -> E:
        """The next effect the protocol asked for, which must be a ``kind``."""
        assert self._effects, f"expected a {kind.__name__}, the protocol asked for nothing"
        effect = self._effects.popleft()
        assert isinstance(effect, kind), f"expected a {kind.__name__}, got {effect!r:.300}"
        return effect

    def done(self) -> None:
        assert not self._effects, f"effects nobody took: {list(self._effects)!r:.500}"

    def kinds(self, events: list[dict[str, Any]]) -> list[str]:
        return [e["type"] for e in events]
