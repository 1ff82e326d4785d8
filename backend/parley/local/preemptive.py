"""Preemptive generation: start the answer while the user pauses, before ``speech_stopped``.

With server VAD on, the transcript of the speech so far is ready soon after
the onset of a pause (``parley.local.transcripts``), while the VAD still waits ``silence_duration_ms`` to be sure
the turn is over. From that transcript the session builds the ``Plan`` of the response it would run if the turn
ended now (the exact LLM messages, token cap, modalities and voice) and ``Preemptor.start`` runs a
``Speculation``: the LLM stream and, for audio, the synthesis of the first phrase, read into bounded buffers.
Nothing is sent to the client and nothing is added to the conversation.

When the real response starts (automatic with ``create_response``; else the client's ``response.create``, e.g. the
relay's after its context lookup) it computes its own plan and calls ``Preemptor.adopt``. Same turn, same plan, no
failure: it gets the speculation and runs its usual pipeline on ``adopted_engines``, which serve the buffered
deltas and audio first and then the live rest of the same streams, so the response is exactly one generated after
``speech_stopped``, only earlier. Anything else (other words, a changed session, a manual response) discards it.
Until the turn is answered (the user pausing, or the turn committed with no response yet), the session re-plans
after every change of the conversation or the session (e.g. the relay injecting its context item, or deleting the
previous turn's, during the pause) and ``start`` replaces a speculation whose plan differs, so the response finds
the newest one. It is also discarded when speech resumes, a new utterance begins, or the turn ends without an
automatic response. Discarding cancels its task, which closes the LLM HTTP stream (llama.cpp's server stops at
the next token on disconnect; measured: the next request is not delayed) and the TTS stream at once.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from parley.local.engines import NO_TOOLS, ChatLLM, Engines, LLMChunk, Message, TextToSpeech, Tooling
from parley.local.phrases import PhraseSplitter
from parley.local.responder import closing_stream
from parley.local.response_run import ResponseSpec

logger = logging.getLogger(__name__)

AUDIO_CHUNKS = 32  # buffered TTS chunks of the first phrase (~6 s at Piper's 200 ms chunks); then TTS waits
T = TypeVar("T")
Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a response sends to the engines. Equal plans make equal requests, so one's output serves the other."""

    messages: tuple[str, ...]  # each message as canonical JSON
    max_tokens: int
    audio: bool
    tts_voice: str | None
    tooling: Tooling = NO_TOOLS
    speed: float = 1.0

    @classmethod
    def of(cls, spec: ResponseSpec, messages: Sequence[Message]) -> Plan:
        return cls.build(
            messages, spec.max_tokens, spec.audio, spec.tts_voice, spec.tools.tooling(), spec.speed
        )

    @classmethod
    def build(
        cls,
        messages: Sequence[Message],
        max_tokens: int,
        audio: bool,
        tts_voice: str | None,
        tooling: Tooling = NO_TOOLS,
        speed: float = 1.0,
    ) -> Plan:
        msgs = tuple(json.dumps(m, sort_keys=True) for m in messages)
        return cls(msgs, max_tokens, audio, tts_voice, tooling, speed)

    def llm_messages(self) -> list[Message]:
        return [json.loads(m) for m in self.messages]


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

    def __init__(self, item_id: str, words: str, plan: Plan, engines: Engines) -> None:
        self.item_id = item_id
        self.words = words  # the transcript it answers (its place in ``plan.messages`` depends on the turn)
        self.plan = plan
        self.started = time.monotonic()
        self.first_phrase: str | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self._engines = engines
        self._deltas: _Channel[LLMChunk] = _Channel(max(plan.max_tokens, 1) + 1)  # + the stream's end
        self._audio: _Channel[bytes] = _Channel(AUDIO_CHUNKS)
        self._phrase_known = asyncio.Event()

    def age_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

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
            logger.info("speculation for %s failed: %r", self.item_id, self.error)
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
            tts = self._engines.tts.synthesize(
                self.first_phrase, voice=self.plan.tts_voice, speed=self.plan.speed
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

    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[bytes]:
        spec = self._spec
        plan = spec.plan
        if not self._used and text == spec.first_phrase and voice == plan.tts_voice and speed == plan.speed:
            self._used = True
            return spec.first_audio()
        return self._real.synthesize(text, voice=voice, speed=speed)


def adopted_engines(spec: Speculation, engines: Engines) -> Engines:
    """Engines for the adopting response: the speculation's streams first, the real engines for anything else."""
    return Engines(
        stt=engines.stt,
        tts=_AdoptedTTS(spec, engines.tts),
        llm=_AdoptedLLM(spec, engines.llm),
        vad=engines.vad,
    )


class Preemptor:
    """At most one speculation per session, and the adopt/discard decisions about it."""

    def __init__(self, engines: Engines, spawn: Spawn) -> None:
        self._engines = engines
        self._spawn = spawn
        self.current: Speculation | None = None
        self.adopted = 0
        self.discarded = 0

    def start(self, item_id: str, words: str, plan: Plan) -> None:
        """Speculate on ``plan`` for the turn ``item_id`` heard as ``words``. Keeps the current speculation if it has
        the same turn and plan (running, finished or failed: an unchanged plan is not retried); replaces it
        otherwise."""
        cur = self.current
        if cur is not None and cur.item_id == item_id and cur.plan == plan:
            return
        if cur is not None:
            same_words = cur.item_id == item_id and cur.words == words
            self.discard(reason="plan changed" if same_words else "newer words")
        spec = Speculation(item_id, words, plan, self._engines)
        spec.task = self._spawn(spec.run(), f"speculation-{item_id}")
        self.current = spec
        logger.debug("speculating for %s on %r (%d messages)", item_id, words, len(plan.messages))

    def discard(self, item_id: str | None = None, *, reason: str) -> None:
        """Cancel the speculation (only if it is for ``item_id``, when given)."""
        cur = self.current
        if cur is None or (item_id is not None and cur.item_id != item_id):
            return
        self.current = None
        self.discarded += 1
        cur.cancel()
        logger.debug("discarded the speculation for %s: %s", cur.item_id, reason)

    def keep_if_words(self, item_id: str, text: str) -> None:
        """The final transcript of ``item_id`` is known: a speculation made from other words is of no use."""
        cur = self.current
        if cur is not None and cur.item_id == item_id and cur.words != text.strip():
            self.discard(reason="final transcript differs")

    def adopt(self, item_id: str | None, plan: Plan) -> Speculation | None:
        """The speculation if it made exactly this response; otherwise discard it and None. ``item_id`` is the
        turn that triggered an automatic response, or None for a client's ``response.create``, which may adopt
        any speculation whose request is exactly its own (equal plans make equal requests)."""
        cur = self.current
        if cur is None:
            return None
        if (item_id is None or cur.item_id == item_id) and cur.plan == plan and cur.error is None:
            self.current = None
            self.adopted += 1
            logger.info("adopted the speculation for %s (started %.0f ms ago)", item_id, cur.age_ms())
            return cur
        why = (
            "failed"
            if cur.error is not None
            else "another turn"
            if cur.item_id != item_id
            else "plan changed"
        )
        self.discard(reason=why)
        return None
