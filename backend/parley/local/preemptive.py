"""The early answer's streams: a ``Speculation`` runs a ``Plan`` (``Speculate`` effect) before ``speech_stopped``,
reading the LLM stream and the synthesis of the first phrase into bounded buffers; nothing is sent to the client and
nothing is added to the conversation. Whether it is started, discarded or adopted is the protocol's decision
(``parley.local.speculation``); this is only how it runs.

The adopting response (``Generate`` with ``adopt``) runs its usual pipeline on ``adopted_engines``, which serve the
buffered deltas and audio first and then the live rest of the same streams, so the response is exactly one generated
after ``speech_stopped``, only earlier. Cancelling a speculation's task closes the LLM HTTP stream (llama.cpp's
server stops at the next token on disconnect; measured: the next request is not delayed) and the TTS stream at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeVar

from parley.local.engines import NO_TOOLS, ChatLLM, Engines, LLMChunk, Message, TextToSpeech, Tooling
from parley.local.phrases import PhraseSplitter
from parley.local.plan import Plan
from parley.local.responder import closing_stream

logger = logging.getLogger(__name__)

AUDIO_CHUNKS = 32  # buffered TTS chunks of the first phrase (~6 s at Piper's 200 ms chunks); then TTS waits
T = TypeVar("T")


class _Channel(Generic[T]):
    """A bounded one-reader FIFO: ``put`` waits while full; ``close`` ends it after what is already in it, and
    the reader then gets ``error`` raised if there was one."""

    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._changed = asyncio.Event()
        self.closed = False
        self.error: BaseException | None = None

    async def put(self, item: T) -> None:
        while len(self._items) >= self._maxsize and not self.closed:
            self._changed.clear()
            await self._changed.wait()
        if not self.closed:
            self._items.append(item)
            self._changed.set()

    def close(self, error: BaseException | None = None) -> None:
        if not self.closed:
            self.closed, self.error = True, error
            self._changed.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            if self._items:
                item = self._items.popleft()
                self._changed.set()
                yield item
            elif self.closed:
                if self.error is not None:
                    raise self.error
                return
            else:
                self._changed.clear()
                await self._changed.wait()


class Speculation:
    """One speculative run: LLM deltas (and the first phrase's audio) into bounded buffers, owned by its task."""

    def __init__(self, plan: Plan, engines: Engines, name: str = "speculation") -> None:
        self.name = name
        self.plan = plan
        self.first_phrase: str | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self._engines = engines
        self._deltas: _Channel[LLMChunk] = _Channel(max(plan.max_tokens, 1) + 1)  # + the stream's end
        self._audio: _Channel[bytes] = _Channel(AUDIO_CHUNKS)
        self._phrase_known = asyncio.Event()

    def cancel(self) -> None:
        """Stop at once (closes the LLM and TTS streams). No-op once the run is over."""
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_llm())
                if self.plan.audio:
                    tg.create_task(self._speak_first())
        except* Exception as group:  # kept for the adopter; never raised into the session's TaskGroup
            self.error = group.exceptions[0]
            logger.info("%s failed: %r", self.name, self.error)
        finally:
            self._deltas.close(self.error)
            self._audio.close(self.error)
            self._phrase_known.set()

    async def _read_llm(self) -> None:
        splitter = PhraseSplitter() if self.plan.audio else None
        plan = self.plan
        llm = self._engines.llm.stream(plan.llm_messages(), max_tokens=plan.max_tokens, tooling=plan.tooling)
        async with closing_stream(llm) as deltas:
            async for delta in deltas:
                if splitter is not None and isinstance(delta, str) and not self._phrase_known.is_set():
                    self._found_phrase(splitter.feed(delta))  # before the delta is visible to the adopter
                await self._deltas.put(delta)
        if splitter is not None:
            self._found_phrase(splitter.flush())
        self._phrase_known.set()
        self._deltas.close()

    def _found_phrase(self, phrases: list[str]) -> None:
        if phrases and not self._phrase_known.is_set():
            self.first_phrase = phrases[0]
            self._phrase_known.set()

    async def _speak_first(self) -> None:
        await self._phrase_known.wait()
        if self.first_phrase is not None:
            plan = self.plan
            tts = self._engines.tts.synthesize(
                self.first_phrase, voice=plan.tts_voice, speed=plan.speed, language=plan.language
            )
            async with closing_stream(tts) as chunks:
                async for pcm in chunks:
                    await self._audio.put(pcm)
        self._audio.close()

    async def deltas(self) -> AsyncIterator[LLMChunk]:
        """The LLM stream for the adopter: buffered deltas, then live ones. Stopping early stops the speculation."""
        finished = False
        try:
            async for delta in self._deltas:
                yield delta
            finished = True
        finally:
            if not finished:
                self.cancel()

    async def first_audio(self) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for pcm in self._audio:
                yield pcm
            finished = True
        finally:
            if not finished:
                self.cancel()


class _AdoptedLLM:
    def __init__(self, spec: Speculation, real: ChatLLM) -> None:
        self._spec, self._real, self._used = spec, real, False

    def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tooling: Tooling = NO_TOOLS,
    ) -> AsyncIterator[LLMChunk]:
        plan = self._spec.plan
        same = messages == plan.llm_messages() and max_tokens == plan.max_tokens and tooling == plan.tooling
        if not self._used and same:
            self._used = True
            return self._spec.deltas()
        return self._real.stream(messages, max_tokens=max_tokens, temperature=temperature, tooling=tooling)


class _AdoptedTTS:
    def __init__(self, spec: Speculation, real: TextToSpeech) -> None:
        self._spec, self._real, self._used = spec, real, False

    def voices(self) -> Sequence[str]:
        return self._real.voices()

    def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, language: str | None = None
    ) -> AsyncIterator[bytes]:
        spec = self._spec
        plan = spec.plan
        same = voice == plan.tts_voice and speed == plan.speed and language == plan.language
        if not self._used and text == spec.first_phrase and same:
            self._used = True
            return spec.first_audio()
        return self._real.synthesize(text, voice=voice, speed=speed, language=language)


def adopted_engines(spec: Speculation, engines: Engines) -> Engines:
    """Engines for the adopting response: the speculation's streams first, the real engines for anything else."""
    return Engines(
        stt=engines.stt,
        tts=_AdoptedTTS(spec, engines.tts),
        llm=_AdoptedLLM(spec, engines.llm),
        vad=engines.vad,
    )
