"""The generation pipeline of one response: LLM deltas -> phrases -> TTS audio, streamed into ``ResponseRun``.
Tool-call pieces and the stream's end (usage) go to the run as they come; only text is spoken.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from parley.local.engines import Engines, LLMChunk, Message, ToolCallDelta
from parley.local.phrases import PhraseSplitter
from parley.local.response_run import ResponseRun

logger = logging.getLogger(__name__)
Event = dict[str, Any]
Emit = Callable[[list[Event]], Awaitable[None]]
PHRASE_QUEUE = 2
T = TypeVar("T")


def _since(marks: dict[str, float]) -> float:
    return (time.monotonic() - marks["start"]) * 1000


@contextlib.asynccontextmanager
async def closing_stream(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator as soon as we stop reading it (cancel, error, early exit)."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def generate(
    run: ResponseRun, messages: list[Message], engines: Engines, emit: Emit, marks: dict[str, float]
) -> bool:
    """Stream the answer into ``run``. Returns True when the LLM hit the token cap (the answer is incomplete).
    ``marks`` receives monotonic times: ``llm_first_token``, ``first_audio``."""
    spec = run.spec
    llm = engines.llm.stream(messages, max_tokens=spec.max_tokens, tooling=spec.tools.tooling())
    if not spec.audio:
        async with closing_stream(llm) as chunks:
            async for chunk in chunks:
                marks.setdefault("llm_first_token", time.monotonic())
                await emit(_take(run, chunk))
        return run.hit_token_cap()

    phrases: asyncio.Queue[str | None] = asyncio.Queue(maxsize=PHRASE_QUEUE)

    async def read_llm() -> None:
        splitter = PhraseSplitter()
        async with closing_stream(llm) as chunks:
            async for chunk in chunks:
                marks.setdefault("llm_first_token", time.monotonic())
                await emit(_take(run, chunk))
                if isinstance(chunk, str):
                    for phrase in splitter.feed(chunk):
                        await phrases.put(phrase)
        for phrase in splitter.flush():
            await phrases.put(phrase)
        await phrases.put(None)

    async def speak() -> None:
        while (phrase := await phrases.get()) is not None:
            logger.debug("phrase at +%.0f ms: %r", _since(marks), phrase)
            run.begin_phrase(phrase)
            tts = engines.tts.synthesize(phrase, voice=spec.tts_voice, speed=spec.speed)
            async with closing_stream(tts) as chunks:
                async for pcm in chunks:
                    if "first_audio" not in marks:
                        marks["first_audio"] = time.monotonic()
                        logger.debug("first audio at +%.0f ms", _since(marks))
                    await emit(run.audio(pcm))
            await emit(run.end_phrase())

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(read_llm())
            tg.create_task(speak())
    except BaseExceptionGroup as group:  # surface the first failure (LLMUnavailable, TTSFailed) as itself
        raise group.exceptions[0] from None
    return run.hit_token_cap()


def _take(run: ResponseRun, chunk: LLMChunk) -> list[Event]:
    """One item of the LLM stream into the run: the events it makes now."""
    if isinstance(chunk, str):
        return run.llm_delta(chunk)
    if isinstance(chunk, ToolCallDelta):
        return run.tool_delta(chunk)
    run.llm_end(chunk)
    return []
