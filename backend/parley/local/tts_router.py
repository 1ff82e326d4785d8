"""One ``TextToSpeech`` over several engines, chosen per request by voice and language.

- English: Piper (the packaged ``en_US-joe-medium``, or ``PARLEY_TTS_VOICE`` / ``PARLEY_TTS_VOICES_DIR``).
- French and German: SVOX Pico (``pico-fr-FR``, ``pico-de-DE``); no French or German Piper voice ships in a
  package. Without ``ttspico``, espeak-ng (``espeak-fr``, ``espeak-de``) when it is installed.

A requested voice that one of the engines has is used when it speaks the requested language (or no language is
given); otherwise the language's voice speaks (so "alloy", or the English voice in a French session, gives the
French voice). Every engine streams PCM16 24 kHz.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

from parley.errors import TTSFailed
from parley.local import espeak, pico
from parley.local.espeak import EspeakTTS
from parley.local.languages import check_language
from parley.local.pico import PicoTTS
from parley.local.tts import PiperTTS
from parley.local.tts_stream import ThreadedTTS
from parley.settings import Settings

logger = logging.getLogger(__name__)


def voice_language(voice: str) -> str | None:
    """The language a voice speaks, from its name: ``pico-fr-FR`` / ``espeak-fr`` / Piper's ``fr_FR-...``."""
    name = voice.removeprefix(pico.PREFIX).removeprefix(espeak.PREFIX)
    code = name.replace("_", "-").split("-", 1)[0].lower()
    return code if len(code) == 2 else None


class LanguageTTS:
    """``TextToSpeech`` picking Piper, Pico or espeak-ng per request. ``voices`` overrides a language's voice."""

    def __init__(self, settings: Settings, *, voices: Mapping[str, str] | None = None) -> None:
        self.piper = PiperTTS(settings)
        self.pico = PicoTTS() if pico.available() else None
        self.espeak = EspeakTTS() if espeak.available() else None
        self._engines: list[ThreadedTTS] = [e for e in (self.piper, self.pico, self.espeak) if e is not None]
        fallback = self.pico or self.espeak
        self.by_language: dict[str, str] = {"en": self.piper.default_voice}
        for lang in ("fr", "de"):
            if self.pico is not None:
                self.by_language[lang] = pico.BY_LANGUAGE[lang]
            elif self.espeak is not None:
                self.by_language[lang] = espeak.PREFIX + lang
        if fallback is None:
            logger.warning("neither ttspico nor espeak-ng is installed: only English speech")
        self.by_language.update(voices or {})
        self.default_voice = self.piper.default_voice

    def voices(self) -> list[str]:
        return [v for engine in self._engines for v in engine.voices()]

    def _owner(self, voice: str) -> ThreadedTTS | None:
        for engine in self._engines:
            if isinstance(engine, PiperTTS | PicoTTS | EspeakTTS) and engine.has_voice(voice):
                return engine
        return None

    def choose(self, voice: str | None, language: str | None) -> tuple[ThreadedTTS, str]:
        """The engine and voice that speak a request. Raises ``TTSFailed`` for a language with no voice here."""
        lang = check_language(language) if language else None
        if voice and self._owner(voice) is not None and (lang is None or voice_language(voice) == lang):
            owner = self._owner(voice)
            assert owner is not None
            return owner, voice
        if lang is None:
            return self.piper, self.piper.resolve_voice(voice)
        chosen = self.by_language.get(lang)
        owner = self._owner(chosen) if chosen else None
        if chosen is None or owner is None:
            raise TTSFailed(
                f"no voice speaks {lang!r} here (pip install ttspico==0.3.2, or apt-get install espeak-ng)"
            )
        return owner, chosen

    def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, language: str | None = None
    ) -> AsyncIterator[bytes]:
        engine, chosen = self.choose(voice, language)
        return engine.synthesize(text, voice=chosen, speed=speed)

    def for_language(self, language: str | None) -> LanguageVoice:
        """A ``TextToSpeech`` speaking ``language`` (None: by voice, English by default), for one session."""
        if language:
            self.choose(None, language)  # fails now, not at the first answer
        return LanguageVoice(self, check_language(language) if language else None)

    async def warmup(self, languages: tuple[str, ...] = ("en",)) -> None:
        async with asyncio.TaskGroup() as tg:
            for lang in languages:
                engine, chosen = self.choose(None, lang)
                tg.create_task(engine.warmup(chosen))

    def close(self) -> None:
        for engine in self._engines:
            engine.close()


class LanguageVoice:
    """``LanguageTTS`` bound to one language: the plain ``TextToSpeech`` shape a session calls."""

    def __init__(self, router: LanguageTTS, language: str | None) -> None:
        self.router = router
        self.language = language

    def voices(self) -> list[str]:
        return self.router.voices()

    def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, language: str | None = None
    ) -> AsyncIterator[bytes]:
        return self.router.synthesize(text, voice=voice, speed=speed, language=language or self.language)
