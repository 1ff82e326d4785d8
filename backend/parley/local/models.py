"""Build, warm up and close the real engines of the local voice server from the settings.

``engines = build_engines(settings)`` is cheap (models load lazily on their worker threads);
``await warmup_engines(engines)`` loads them and runs each once, so the first user turn pays neither, and raises
the engine's error (``STTFailed``, ``TTSFailed``) if a model is missing. The LLM server is not contacted: it may
come up later, and each LLM call tries it afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time

from parley.local.engines import Engines
from parley.local.llm import OpenAIChatLLM
from parley.local.stt import FasterWhisperSTT
from parley.local.tts import PiperTTS
from parley.local.vad import SileroVadFactory
from parley.settings import Settings

logger = logging.getLogger(__name__)


def build_engines(settings: Settings) -> Engines:
    return Engines(
        stt=FasterWhisperSTT(settings),
        tts=PiperTTS(settings),
        llm=OpenAIChatLLM(settings),
        vad=SileroVadFactory(),
    )


async def warmup_engines(engines: Engines) -> None:
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        if isinstance(engines.stt, FasterWhisperSTT):
            tg.create_task(engines.stt.warmup())
        if isinstance(engines.tts, PiperTTS):
            tg.create_task(engines.tts.warmup())
    logger.info("engines warmed up in %.0f ms", (time.perf_counter() - t0) * 1000)


async def close_engines(engines: Engines) -> None:
    """Close the LLM client, then stop the model worker threads (waiting for running calls, off the loop)."""
    if isinstance(engines.llm, OpenAIChatLLM):
        await engines.llm.aclose()
    for engine in (engines.stt, engines.tts):
        if isinstance(engine, FasterWhisperSTT | PiperTTS):
            await asyncio.to_thread(engine.close)
