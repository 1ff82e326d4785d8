"""The interfaces between a local voice session and the model runtimes. Only these shapes cross the boundary.

All audio here is PCM16 mono at 24 kHz (the wire rate); each engine converts to what its model needs.
Blocking model calls run off the event loop inside the implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class VadParams:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: Literal["start", "stop"]
    audio_ms: int
    """Position in the session's input audio stream (ms since the first appended sample): for ``start`` the
    speech start minus prefix padding, clamped at 0; for ``stop`` the end of speech."""


class VoiceActivity(Protocol):
    """A streaming detector for one session. ``feed`` takes any length of audio and returns the edges it found."""

    def feed(self, pcm: bytes) -> list[VadEvent]: ...

    def reset(self) -> None: ...


class VadFactory(Protocol):
    def __call__(self, params: VadParams) -> VoiceActivity: ...


class SpeechToText(Protocol):
    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        """Transcribe a whole utterance. Raises ``parley.errors.STTFailed``."""
        ...


class TextToSpeech(Protocol):
    def voices(self) -> Sequence[str]: ...

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """Stream PCM16 24 kHz chunks for ``text`` as they are made. Raises ``parley.errors.TTSFailed``."""
        ...


class ChatLLM(Protocol):
    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """Stream text deltas from an OpenAI-compatible chat-completions server.

        Raises ``parley.errors.LLMUnavailable`` when the server cannot be reached or fails."""
        ...


@dataclass(slots=True)
class Engines:
    stt: SpeechToText
    tts: TextToSpeech
    llm: ChatLLM
    vad: VadFactory
