"""Speech to text for several languages: each transcription goes to the model for its language.

English goes to the English model (``PARLEY_STT_MODEL``, the packaged tiny.en by default: fastest, and as accurate
on English as base, see docs/benchmarks.md); every other language, and language detection (``language`` empty),
to the multilingual Whisper base. Each model loads on first use on its own worker thread, so an English-only server
never loads base, and a missing multilingual package fails only the turns that need it (``STTFailed`` naming it).
"""

from __future__ import annotations

import asyncio
import logging

from parley import speech_models
from parley.local.languages import check_language
from parley.local.stt import FasterWhisperSTT
from parley.settings import Settings

logger = logging.getLogger(__name__)


class LanguageSTT:
    """``SpeechToText`` routing by the ``language`` of each call (``None``: the server's ``language``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        english_model: str | None = None,
        multilingual_model: str = speech_models.MULTILINGUAL,
    ) -> None:
        self._settings = settings
        self.english = FasterWhisperSTT(settings, model=english_model)
        if self.english.multilingual:
            self.multilingual = self.english  # one multilingual model does every language
        else:
            self.multilingual = FasterWhisperSTT(settings, model=multilingual_model)

    @property
    def model_name(self) -> str:
        return self.model_for(self._settings.language)

    @property
    def model_ref(self) -> str:
        """The models as configured (for logs and health checks): ``tiny.en+base``."""
        refs = dict.fromkeys([self.english.model_ref, self.multilingual.model_ref])
        return "+".join(refs)

    def engine_for(self, language: str | None) -> FasterWhisperSTT:
        return self.english if language == "en" else self.multilingual

    def model_for(self, language: str | None) -> str:
        """What a session in ``language`` echoes as ``transcription.model``."""
        return self.engine_for(language).model_name

    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        lang = (language if language is not None else self._settings.language) or ""  # "": detect
        return await self.engine_for(lang or None).transcribe(pcm, language=lang, prompt=prompt)

    def for_language(self, language: str | None) -> LanguageEar:
        """A ``SpeechToText`` hearing ``language`` (None or "": detect) unless a call names another, for one
        session. Raises ``UnsupportedLanguage`` for a language the server does not speak."""
        return LanguageEar(self, check_language(language) if language else "")

    async def warmup(self, languages: tuple[str, ...] = ("en",)) -> None:
        """Load the models ``languages`` need (the multilingual one only when a language other than English is
        listed)."""
        engines = {id(e): e for e in (self.engine_for(lang) for lang in languages)}
        async with asyncio.TaskGroup() as tg:
            for engine in engines.values():
                tg.create_task(engine.warmup())

    def close(self) -> None:
        self.english.close()
        if self.multilingual is not self.english:
            self.multilingual.close()


class LanguageEar:
    """``LanguageSTT`` bound to one language: the plain ``SpeechToText`` shape a session calls."""

    def __init__(self, router: LanguageSTT, language: str) -> None:
        self.router = router
        self.language = language

    @property
    def model_name(self) -> str:
        return self.router.model_for(self.language or None)

    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        lang = self.language if language is None else language
        return await self.router.transcribe(pcm, language=lang, prompt=prompt)
