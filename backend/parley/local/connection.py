"""``LocalConnection``: the I/O of one client's local voice session. It pumps; ``LocalProtocol`` decides.

One ``asyncio.TaskGroup`` holds every task of the session: the reader (client frames into the inbox), the writer
(outbound queue to the client), the driver, and the engine work the protocol asks for (``parley.local.effects``):
transcriptions, speculations (``parley.local.preemptive``) and the response's generation
(``parley.local.responder``). The driver is the only caller of the protocol: it takes the next input from the
inbox (a client frame, an engine's result) or, at the protocol's ``next_deadline()``, ticks its clock, and carries
out what comes back in order. Engine tasks only feed their results into the inbox, tagged with the id their effect
gave; they never look at the protocol's state.

Queues are bounded: the inbox (``INBOX_SIZE``; when full, the reader stops reading and engine tasks wait) and the
outbound queue (``settings.outbound_queue_size``; when full, the driver waits), which pushes back on a client that
does not read. When the client goes away the reader or writer raises ``_Closed`` and the group cancels the rest.

Transport-agnostic: ``recv()`` returns the next frame or None when the client has gone; ``send(text)`` sends.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable

from parley.local.effects import Discard, Event, Generate, Out, Speculate, StopGenerating, Transcribe
from parley.local.engines import Engines, LLMChunk
from parley.local.options import ProtocolOptions
from parley.local.preemptive import Speculation, adopted_engines
from parley.local.protocol import LocalProtocol
from parley.local.responder import generate
from parley.local.stt_router import LanguageSTT
from parley.realtime.audio import BYTES_PER_MS
from parley.settings import Settings

logger = logging.getLogger(__name__)

INBOX_SIZE = 64
Step = Callable[[], list[Out]]


class _Closed(Exception):
    """The client went away."""


class _Feed:
    """A generation's ``Sink``: each result into the inbox for the protocol, tagged with the response's id."""

    def __init__(self, conn: LocalConnection, response_id: str) -> None:
        self._conn, self._p, self._id = conn, conn.protocol, response_id

    async def llm(self, chunk: LLMChunk) -> None:
        await self._conn.feed(functools.partial(self._p.on_llm, self._id, chunk))

    async def phrase(self, text: str) -> None:
        await self._conn.feed(functools.partial(self._p.on_phrase, self._id, text))

    async def audio(self, pcm: bytes) -> None:
        await self._conn.feed(functools.partial(self._p.on_audio, self._id, pcm))

    async def phrase_end(self) -> None:
        await self._conn.feed(functools.partial(self._p.on_phrase_end, self._id))


class LocalConnection:
    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        *,
        recv: Callable[[], Awaitable[str | bytes | None]],
        send: Callable[[str], Awaitable[None]],
        model: str = "parley-local",
        parley_events: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engines = engines
        self._recv = recv
        self._send = send
        self._clock = clock
        self.protocol = LocalProtocol(
            vad_factory=engines.vad,
            voices=engines.tts.voices(),
            options=ProtocolOptions.from_settings(settings, parley_events=parley_events),
            model=model,
            stt_model=engines.stt.model_for
            if isinstance(engines.stt, LanguageSTT)
            else engines.stt.model_name,
            clock=clock,
        )
        self._inbox: asyncio.Queue[Step] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._out: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.outbound_queue_size)
        self._tg: asyncio.TaskGroup | None = None
        self.generations: dict[str, asyncio.Task[None]] = {}
        self._speculations: dict[int, Speculation] = {}

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._writer(), name="writer")
                tg.create_task(self._reader(), name="reader")
                tg.create_task(self._drive(), name="driver")
        except* _Closed:
            logger.debug("session %s closed", self.protocol.session_id)

    async def feed(self, step: Step) -> None:
        """An input for the protocol (run by the driver, in order)."""
        await self._inbox.put(step)

    # --- pumps ------------------------------------------------------------------------------------------------

    async def _reader(self) -> None:
        while True:
            raw = await self._recv()
            if raw is None:
                raise _Closed
            await self.feed(functools.partial(self.protocol.receive, raw))

    async def _writer(self) -> None:
        while True:
            event = await self._out.get()
            try:
                await self._send(json.dumps(event))
            except Exception as exc:
                logger.debug("send failed: %r", exc)
                raise _Closed from exc

    async def _drive(self) -> None:
        await self._carry_out(self.protocol.created())
        while True:
            deadline = self.protocol.next_deadline()
            try:
                async with asyncio.timeout_at(_loop_time(deadline, self._clock)):
                    step = await self._inbox.get()
            except TimeoutError:
                step = self.protocol.tick
            try:
                outs = step()
            except Exception:  # a bug must not end the session
                logger.exception("the protocol failed on %r", step)
                outs = []
            await self._carry_out(outs)

    # --- effects ----------------------------------------------------------------------------------------------

    async def _carry_out(self, outs: list[Out]) -> None:
        assert self._tg is not None
        for out in outs:
            if isinstance(out, dict):
                await self._out.put(out)
            elif isinstance(out, Transcribe):
                self._tg.create_task(self._transcribe(out), name=f"stt-{out.item_id}")
            elif isinstance(out, Speculate):
                spec = Speculation(out.plan, self.engines, name=f"speculation {out.id}")
                self._speculations[out.id] = spec
                spec.task = self._tg.create_task(self._speculate(out.id, spec), name=f"speculation-{out.id}")
            elif isinstance(out, Discard):
                gone = self._speculations.pop(out.id, None)
                if gone is not None:
                    gone.cancel()
            elif isinstance(out, Generate):
                adopted = self._speculations.pop(out.adopt, None) if out.adopt is not None else None
                task = self._tg.create_task(self._generate(out, adopted), name=f"resp-{out.response_id}")
                self.generations[out.response_id] = task
            elif isinstance(out, StopGenerating):
                stopping = self.generations.pop(out.response_id, None)
                if stopping is not None:
                    stopping.cancel()
                    await asyncio.wait([stopping])  # its LLM and TTS streams are closed by now

    async def _transcribe(self, t: Transcribe) -> None:
        started = time.monotonic()
        try:
            text = await self.engines.stt.transcribe(t.pcm, language=t.language, prompt=t.prompt)
        except Exception as exc:
            await self.feed(functools.partial(self.protocol.on_transcribe_failed, t.job, exc))
            return
        logger.debug(
            "transcribed %s (%d ms audio) in %.0f ms",
            t.item_id,
            len(t.pcm) // BYTES_PER_MS,
            (time.monotonic() - started) * 1000,
        )
        await self.feed(functools.partial(self.protocol.on_transcribed, t.job, text))

    async def _speculate(self, guess_id: int, spec: Speculation) -> None:
        await spec.run()
        if spec.error is not None:
            await self.feed(functools.partial(self.protocol.on_speculation_failed, guess_id))

    async def _generate(self, g: Generate, adopted: Speculation | None) -> None:
        engines = adopted_engines(adopted, self.engines) if adopted is not None else self.engines
        p = self.protocol
        try:
            await generate(g.plan, engines, _Feed(self, g.response_id))
        except Exception as exc:
            await self.feed(functools.partial(p.on_generation_failed, g.response_id, exc))
            return
        finally:
            if adopted is not None:
                adopted.cancel()  # no-op when it ran to the end
            if self.generations.get(g.response_id) is asyncio.current_task():
                del self.generations[g.response_id]
        await self.feed(functools.partial(p.on_generated, g.response_id))


def _loop_time(deadline: float | None, clock: Callable[[], float]) -> float | None:
    """The event loop's time for a deadline on ``clock``."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + max(0.0, deadline - clock())
