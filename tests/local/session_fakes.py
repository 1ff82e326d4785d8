"""Fake engines and an in-process harness for ``LocalConnection`` tests (no sockets, no models).

- ``EnergyVad``: a scriptable VAD — any 10 ms frame with a sample above 1000 is speech.
- ``ScriptedLLM``: yields scripted deltas (optionally slowly, or held after the first one until ``gate`` is set),
  records the messages and which requests ran to the end, can be "down". ``changed`` is set when a request
  starts or ends (tests await conditions on it).
- ``WordTTS``: 100 ms of audio per word of each phrase, in 50 ms chunks; records what it spoke and stopped.
- ``FakeSTT``: returns a scripted transcript (held until ``gate`` is set, when there is one), can fail; sets
  ``changed`` when called.
- ``Harness``: runs a session; ``send`` client events, ``expect`` server events, ``settle`` for "nothing else
  happens"; every server event is checked against the stock SDK's pydantic models.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import typing
from collections.abc import AsyncIterator, Sequence
from typing import Any

from openai.types.realtime.realtime_server_event import RealtimeServerEvent

from parley.errors import LLMUnavailable, STTFailed
from parley.local.connection import LocalConnection
from parley.local.engines import NO_TOOLS, Engines, LLMChunk, Message, Tooling, VadEvent, VadParams
from parley.realtime.audio import BYTES_PER_MS
from parley.settings import Settings

FRAME = 10 * BYTES_PER_MS
_SDK_TYPES = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in typing.get_args(typing.get_args(RealtimeServerEvent)[0])
}


def speech(ms: int) -> bytes:
    return b"\x40\x1f" * (ms * BYTES_PER_MS // 2)  # 8000


def silence(ms: int) -> bytes:
    return bytes(ms * BYTES_PER_MS)


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


class EnergyVad:
    def __init__(self, params: VadParams) -> None:
        self.p = params
        self.pos = 0
        self.speaking = False
        self.silent_since: int | None = None
        self._rest = b""
        self.last_prob = 0.0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data, out = self._rest + pcm, []
        while len(data) >= FRAME:
            frame, data = data[:FRAME], data[FRAME:]
            loud = (
                max(abs(int.from_bytes(frame[i : i + 2], "little", signed=True)) for i in range(0, FRAME, 32))
                > 1000
            )
            self.last_prob = 1.0 if loud else 0.0
            if loud and not self.speaking:
                self.speaking, self.silent_since = True, None
                out.append(VadEvent("start", max(0, self.pos - self.p.prefix_padding_ms)))
            elif loud:
                self.silent_since = None
            elif self.speaking:
                self.silent_since = self.pos if self.silent_since is None else self.silent_since
                if self.pos + 10 - self.silent_since >= self.p.silence_duration_ms:
                    self.speaking = False
                    out.append(VadEvent("stop", self.silent_since))
            self.pos += 10
        self._rest = data
        return out

    def reset(self) -> None:
        self.speaking, self.silent_since, self._rest = False, None, b""


class ScriptedLLM:
    def __init__(
        self,
        deltas: Sequence[LLMChunk] = ("Hello there, ", "my friend. ", "This is ", "a test."),
        delay_s: float = 0.0,
    ) -> None:
        self.deltas = list(deltas)
        self.delay_s = delay_s
        self.down = False
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Event()
        self.calls: list[list[Message]] = []
        self.complete: list[bool] = []  # per request: all its deltas were read
        self.max_tokens: list[int | None] = []
        self.tooling: list[Tooling] = []
        self.yielded = 0
        self.closed = 0

    async def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tooling: Tooling = NO_TOOLS,
    ) -> AsyncIterator[LLMChunk]:
        call = len(self.calls)
        self.calls.append(messages)
        self.complete.append(False)
        self.max_tokens.append(max_tokens)
        self.tooling.append(tooling)
        self.changed.set()
        if self.down:
            raise LLMUnavailable("LLM server at http://127.0.0.1:9/v1 is unreachable (connection refused)")
        try:
            for n, delta in enumerate(self.deltas):
                if max_tokens is not None and n >= max_tokens:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if n and self.gate is not None:
                    await self.gate.wait()
                self.yielded += 1
                yield delta
            self.complete[call] = True
        finally:
            self.closed += 1
            self.changed.set()


class WordTTS:
    """100 ms of audio per word at speed 1 (``100 / speed`` ms at another speed)."""

    def __init__(self) -> None:
        self.spoken: list[str] = []
        self.speeds: list[float] = []
        self.languages: list[str | None] = []
        self.stopped = 0
        self.finished = 0
        self.delay_s = 0.0

    def voices(self) -> list[str]:
        return ["en_US-joe-medium"]

    async def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, language: str | None = None
    ) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        self.speeds.append(speed)
        self.languages.append(language)
        total = round(100 / speed) * len(text.split()) * BYTES_PER_MS
        try:
            for off in range(0, total, 50 * BYTES_PER_MS):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield b"\x01\x00" * (min(50 * BYTES_PER_MS, total - off) // 2)
            self.finished += 1
        except GeneratorExit:
            self.stopped += 1
            raise


class FakeSTT:
    model_name = "fake-stt"

    def __init__(self, text: str = "What is the capital of France?") -> None:
        self.text = text
        self.fail = False
        self.calls = 0
        self.languages: list[str | None] = []
        self.delay_s = 0.0
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Event()

    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        self.calls += 1
        self.languages.append(language)
        self.changed.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise STTFailed("speech to text failed: model crashed")
        return self.text


def fake_engines() -> Engines:
    return Engines(stt=FakeSTT(), tts=WordTTS(), llm=ScriptedLLM(), vad=EnergyVad)


class Harness:
    def __init__(self, engines: Engines, settings: Settings) -> None:
        self.engines = engines
        self.settings = settings
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self._sentinels = 0
        self.session = LocalConnection(settings, engines, recv=self._inbox.get, send=self._send)

    async def _send(self, text: str) -> None:
        event = json.loads(text)
        cls = _SDK_TYPES.get(event["type"])
        if cls is not None:
            try:
                cls.model_validate(event)
            except Exception as exc:
                self.invalid.append(f"{event['type']}: {exc}")
        elif not event["type"].startswith("parley."):
            self.invalid.append(f"not an SDK event type: {event['type']}")
        await self._outbox.put(event)

    async def send(self, event: dict[str, Any] | str) -> None:
        await self._inbox.put(event if isinstance(event, str) else json.dumps(event))

    async def append(self, pcm: bytes, chunk_ms: int = 100) -> None:
        step = chunk_ms * BYTES_PER_MS
        for off in range(0, len(pcm), step):
            await self.send({"type": "input_audio_buffer.append", "audio": b64(pcm[off : off + step])})

    async def expect(self, kind: str, wait_s: float = 5.0) -> dict[str, Any]:
        """The next event of this type (events before it are kept in ``seen``)."""
        async with asyncio.timeout(wait_s):
            while True:
                event = await self._outbox.get()
                self.seen.append(event)
                if event["type"] == kind:
                    return event

    async def collect_until(self, kind: str, wait_s: float = 5.0) -> list[dict[str, Any]]:
        start = len(self.seen)
        await self.expect(kind, wait_s)
        return self.seen[start:]

    async def settle(self, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """Every event the session sent before it answered a sentinel request sent now (for 'nothing else
        happens'). The sentinel, ``conversation.item.retrieve`` of an item that does not exist, is answered with an
        error carrying its ``event_id``; the session handles client events in order, so whatever the events sent
        before it (and the engine results already reported) cause at once comes before that reply, not after a
        timeout that a slow machine may outlast. The reply itself is consumed, not returned."""
        self._sentinels += 1
        event_id = f"sentinel-{self._sentinels}"
        await self.send({"type": "conversation.item.retrieve", "event_id": event_id, "item_id": event_id})
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(wait_s):
            while True:
                event = await self._outbox.get()
                if event["type"] == "error" and event["error"].get("event_id") == event_id:
                    assert event["error"]["code"] == "item_not_found", event
                    return got
                got.append(event)
                self.seen.append(event)

    async def update(self, **session: Any) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return await self.expect("session.updated")


@contextlib.asynccontextmanager
async def running(engines: Engines | None = None, **settings: Any) -> AsyncIterator[Harness]:
    opts = {"stt_partial_interval_ms": 0, **settings}
    h = Harness(engines or fake_engines(), Settings(**opts))
    task = asyncio.create_task(h.session.run())
    try:
        await h.expect("session.created")
        yield h
    finally:
        await h._inbox.put(None)
        async with asyncio.timeout(5):
            await task
    assert not h.invalid, h.invalid
