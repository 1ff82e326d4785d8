"""The interfaces between a local voice session and the model runtimes. Only these shapes cross the boundary.

All audio here is PCM16 mono at 24 kHz (the wire rate); each engine converts to what its model needs.
Blocking model calls run off the event loop inside the implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Message = dict[str, Any]
"""One chat-completions message: ``{"role", "content"}``, an assistant's ``tool_calls``, or a ``tool`` result."""


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
    """A streaming detector for one session. ``feed`` takes any length of audio and returns the edges it found;
    ``last_prob`` is the speech probability of the latest frame (a pause begins when it drops below threshold)."""

    last_prob: float

    def feed(self, pcm: bytes) -> list[VadEvent]: ...

    def reset(self) -> None: ...


class VadFactory(Protocol):
    def __call__(self, params: VadParams) -> VoiceActivity: ...


class SpeechToText(Protocol):
    @property
    def model_name(self) -> str:
        """The model that transcribes (echoed as the session's ``transcription.model``)."""
        ...

    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        """Transcribe a whole utterance. Raises ``parley.errors.STTFailed``."""
        ...


class TextToSpeech(Protocol):
    def voices(self) -> Sequence[str]: ...

    def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, language: str | None = None
    ) -> AsyncIterator[bytes]:
        """Stream PCM16 24 kHz chunks for ``text`` as they are made, spoken ``speed`` times as fast as normal, by
        ``voice`` if it speaks ``language`` (None: any), else by the language's voice (an engine with one
        language ignores it). Raises ``parley.errors.TTSFailed``."""
        ...


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call. ``index`` tells calls apart; ``call_id`` and ``name`` come with its first
    piece (some servers repeat them in every piece), ``arguments`` is the next slice of its JSON text."""

    index: int
    call_id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class LLMEnd:
    """The last item of a stream: why it ended, and the token usage the server reported (None: not reported)."""

    finish_reason: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None


LLMChunk = str | ToolCallDelta | LLMEnd
"""Text deltas are plain ``str``."""


@dataclass(frozen=True, slots=True)
class Tooling:
    """The tools offered to the LLM for one request, in chat-completions shape (``tools`` empty: none)."""

    tools: tuple[Message, ...] = ()
    tool_choice: str | Message = "auto"


NO_TOOLS = Tooling()


class ChatLLM(Protocol):
    def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tooling: Tooling = NO_TOOLS,
    ) -> AsyncIterator[LLMChunk]:
        """Stream text deltas, tool-call pieces and a final ``LLMEnd`` from an OpenAI-compatible chat-completions
        server.

        Raises ``parley.errors.LLMUnavailable`` when the server cannot be reached or fails."""
        ...


@dataclass(slots=True)
class Engines:
    stt: SpeechToText
    tts: TextToSpeech
    llm: ChatLLM
    vad: VadFactory
