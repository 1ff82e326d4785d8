"""The generation pipeline of one response (``Generate`` effect): LLM deltas -> phrases -> TTS audio, each result
handed to a ``Sink`` (the connection feeds them to the protocol, which makes the events). Only text is spoken.

Audio mode runs two steps at once inside the response's task: the LLM reader cuts the stream into phrases and puts
them on a small bounded queue (``PHRASE_QUEUE`` phrases; when full, the reader waits — the LLM server keeps
generating into the socket meanwhile), and the speaker synthesizes phrase after phrase, so phrase 1 is spoken while
the LLM is still writing phrase 2. Cancelling the response's task stops both at once: the LLM HTTP stream and the
TTS stream are closed at once, which tells the LLM server and the Piper worker to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

from parley.local.engines import Engines, LLMChunk
from parley.local.phrases import PhraseSplitter
from parley.local.plan import Plan

logger = logging.getLogger(__name__)
PHRASE_QUEUE = 2
T = TypeVar("T")


class Sink(Protocol):
    """Where a generation's results go, in order."""

    async def llm(self, chunk: LLMChunk) -> None: ...

    async def phrase(self, text: str) -> None: ...

    async def audio(self, pcm: bytes) -> None: ...

    async def phrase_end(self) -> None: ...


@contextlib.asynccontextmanager
async def closing_stream(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator as soon as we stop reading it (cancel, error, early exit)."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def generate(plan: Plan, engines: Engines, sink: Sink) -> None:
    """Stream the answer of ``plan`` into ``sink``."""
    llm = engines.llm.stream(plan.llm_messages(), max_tokens=plan.max_tokens, tooling=plan.tooling)
    if not plan.audio:
        async with closing_stream(llm) as chunks:
            async for chunk in chunks:
                await sink.llm(chunk)
        return

    phrases: asyncio.Queue[str | None] = asyncio.Queue(maxsize=PHRASE_QUEUE)

    async def read_llm() -> None:
        splitter = PhraseSplitter()
        async with closing_stream(llm) as chunks:
            async for chunk in chunks:
                await sink.llm(chunk)
                if isinstance(chunk, str):
                    for phrase in splitter.feed(chunk):
                        await phrases.put(phrase)
        for phrase in splitter.flush():
            await phrases.put(phrase)
        await phrases.put(None)

    async def speak() -> None:
        while (phrase := await phrases.get()) is not None:
            logger.debug("phrase: %r", phrase)
            await sink.phrase(phrase)
            tts = engines.tts.synthesize(
                phrase, voice=plan.tts_voice, speed=plan.speed, language=plan.language
            )
            async with closing_stream(tts) as chunks:
                async for pcm in chunks:
                    await sink.audio(pcm)
            await sink.phrase_end()

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(read_llm())
            tg.create_task(speak())
    except BaseExceptionGroup as group:  # surface the first failure (LLMUnavailable, TTSFailed) as itself
        raise group.exceptions[0] from None
