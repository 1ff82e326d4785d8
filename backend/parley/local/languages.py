"""The languages a local voice session can speak, and what each one uses.

``check_language("fr-FR")`` gives ``"fr"``; an unknown or unsupported language raises ``UnsupportedLanguage``, whose
message names the supported ones. ``answer_instruction(lang)`` is the line that tells the LLM which language to
answer in. Which models hear and speak each language: ``stt_router.LanguageSTT`` and ``tts_router.LanguageTTS``.
"""

from __future__ import annotations

SUPPORTED = ("en", "fr", "de")
NAMES = {"en": "English", "fr": "French", "de": "German"}
_INSTRUCTIONS = {
    "en": "Answer in English.",
    "fr": "Réponds en français.",
    "de": "Antworte auf Deutsch.",
}


class UnsupportedLanguage(ValueError):
    """A language the local voice server cannot speak; the message names the ones it can."""

    def __init__(self, value: str) -> None:
        supported = ", ".join(f"{code} ({NAMES[code]})" for code in SUPPORTED)
        super().__init__(f"unsupported language {value!r}: supported are {supported}")
        self.value = value


def check_language(value: str) -> str:
    """The supported language code for ``value`` (``fr``, ``FR``, ``fr-FR``, ``fr_CA`` -> ``fr``)."""
    code = value.strip().replace("_", "-").split("-", 1)[0].lower()
    if code not in SUPPORTED:
        raise UnsupportedLanguage(value)
    return code


def answer_instruction(language: str) -> str:
    """One line for the LLM's instructions: answer in this language (written in it)."""
    return _INSTRUCTIONS[check_language(language)]
