"""Build, warm up and close the real engines of the local voice server from the settings.

``engines = build_engines(settings)`` is cheap (models load lazily on their worker threads);
``await warmup_engines(engines)`` loads them and runs each once, so the first user turn pays neither, and raises
the engine's error (``STTFailed``, ``TTSFailed``) if a model is missing. The LLM server is not contacted: it may
come up later, and each LLM call tries it afresh.

Languages: the STT and TTS built here serve every supported language (``languages.SUPPORTED``); each response's
plan carries its session's language to them (speech to text hearing it, the voice speaking it), and the LLM's line
is ``languages.answer_instruction(language)``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from parley.local.engines import Engines
from parley.local.llm import OpenAIChatLLM
from parley.local.stt_router import LanguageSTT
from parley.local.tts_router import LanguageTTS
from parley.local.vad import SileroVadFactory
from parley.settings import Settings

logger = logging.getLogger(__name__)


def build_engines(settings: Settings) -> Engines:
    return Engines(
        stt=LanguageSTT(settings),
        tts=LanguageTTS(settings),
        llm=OpenAIChatLLM(settings),
        vad=SileroVadFactory(),
    )


async def warmup_engines(engines: Engines, languages: tuple[str, ...] = ("en",)) -> None:
    """Load and run the models ``languages`` need (base Whisper and Pico only for a language other than English)."""
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        if isinstance(engines.stt, LanguageSTT):
            tg.create_task(engines.stt.warmup(languages))
        if isinstance(engines.tts, LanguageTTS):
            tg.create_task(engines.tts.warmup(languages))
    logger.info("engines warmed up in %.0f ms", (time.perf_counter() - t0) * 1000)


async def close_engines(engines: Engines) -> None:
    """Close the LLM client, then stop the model worker threads (waiting for running calls, off the loop)."""
    if isinstance(engines.llm, OpenAIChatLLM):
        await engines.llm.aclose()
    for engine in (engines.stt, engines.tts):
        if isinstance(engine, LanguageSTT | LanguageTTS):
            await asyncio.to_thread(engine.close)
