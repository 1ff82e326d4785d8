"""Text to speech with SVOX Pico (``ttspico``), for the languages no packaged Piper voice speaks (French, German).

Pico's voices (~1 MB each, installed with ``ttspico`` 0.3.2 into ``<prefix>/languages``) are named here
``pico-<locale>``: ``pico-fr-FR``, ``pico-de-DE``, ``pico-en-US``, ``pico-en-GB``, ``pico-es-ES``, ``pico-it-IT``.
Pico speaks 16 kHz PCM16, a whole sentence in ~35 ms on these cores; each sentence's audio is resampled to 24 kHz
and streamed by ``ThreadedTTS``. A Pico engine is not thread-safe: each worker thread has its own per voice.
Speed is Pico's ``<speed level="N">`` markup (N = 100 x speed); the text's own angle brackets are dropped, so a
reply cannot inject markup.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from parley.errors import TTSFailed
from parley.local.tts_stream import Emit, ThreadedTTS
from parley.realtime.audio import WIRE_RATE, pcm16_to_float, resample

logger = logging.getLogger(__name__)

PICO_RATE = 16_000
LOCALES = ("fr-FR", "de-DE", "en-US", "en-GB", "es-ES", "it-IT")
PREFIX = "pico-"
BY_LANGUAGE = {
    "fr": "pico-fr-FR",
    "de": "pico-de-DE",
    "en": "pico-en-US",
    "es": "pico-es-ES",
    "it": "pico-it-IT",
}
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_MARKUP = re.compile(r"[<>]")


def available() -> bool:
    """Whether ``ttspico`` is installed (its voices come with it)."""
    import importlib.util

    return importlib.util.find_spec("ttspico") is not None


def sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(_MARKUP.sub(" ", text))) if s]


class PicoTTS(ThreadedTTS):
    """``TextToSpeech`` with SVOX Pico. ``default_voice`` speaks when a request names no Pico voice."""

    engine = "pico"

    def __init__(self, default_voice: str = "pico-fr-FR") -> None:
        if not self.has_voice(default_voice):
            raise TTSFailed(f"{default_voice!r} is not a Pico voice ({', '.join(self.voices())})")
        super().__init__()
        self.default_voice = default_voice
        self._local = threading.local()

    def voices(self) -> list[str]:
        return [PREFIX + locale for locale in LOCALES]

    def has_voice(self, voice: str) -> bool:
        return voice.removeprefix(PREFIX) in LOCALES and voice.startswith(PREFIX)

    def resolve_voice(self, voice: str | None) -> str:
        if voice and self.has_voice(voice):
            return voice
        return self.default_voice

    def _engine(self, voice: str) -> Any:
        engines: dict[str, Any] | None = getattr(self._local, "engines", None)
        if engines is None:
            engines = self._local.engines = {}
        engine = engines.get(voice)
        if engine is None:
            try:
                import ttspico

                engine = ttspico.TtsEngine(voice.removeprefix(PREFIX))
            except Exception as exc:
                raise TTSFailed(
                    f"cannot load Pico voice {voice!r}: {exc} (pip install ttspico==0.3.2)"
                ) from exc
            logger.info("loaded Pico voice %s", voice)
            engines[voice] = engine
        return engine

    def _speak(self, text: str, voice: str, speed: float, emit: Emit) -> None:
        engine = self._engine(voice)
        level = max(20, min(500, round(100 * speed)))
        going = True
        carry = b""

        def on_audio(_format: int, audio: bytes, _fin: bool) -> bool:
            # An odd sample waits for the next buffer: an even count keeps the 16 -> 24 kHz steps in phase.
            nonlocal carry, going
            data = carry + audio
            cut = len(data) // 4 * 4
            carry = data[cut:]
            if cut:
                going = emit(resample(pcm16_to_float(data[:cut]), PICO_RATE, WIRE_RATE))
            return going

        for sentence in sentences(text):
            body = f'<speed level="{level}">{sentence}</speed>'
            engine.speak(body, on_audio)
            if not going:
                return
            if carry:
                going = emit(resample(pcm16_to_float(carry[: len(carry) // 2 * 2]), PICO_RATE, WIRE_RATE))
                carry = b""
                if not going:
                    return
