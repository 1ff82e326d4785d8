"""The effective configuration of one local voice session: OpenAI-like defaults, ``session.update`` merging with
validation, and the full GA ``session`` object sent in ``session.created`` / ``session.updated``.

Pure data: no I/O. ``apply_update`` either returns a new config or raises ``InvalidRequest`` (nothing changes, as
the GA API does with an update it refuses).

Honest echoes: the session object says what this server does, never what it was asked for and does not do.
Refused with ``invalid_value`` (the update is not applied): ``semantic_vad`` (no end-of-turn model here: use
``server_vad``), a non-null ``noise_reduction`` (no denoiser), a stored ``prompt``, ``include`` entries,
``truncation`` by retention ratio, non-function (MCP) tools. Echoed as what applies: ``transcription.model`` is the
model that transcribes whatever name was asked for; ``tracing`` is null (nothing is traced to OpenAI);
``truncation`` is ``"disabled"`` (the conversation is never cut; "auto" is accepted and echoed so).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from parley.errors import InvalidRequest
from parley.local.engines import VadParams
from parley.local.languages import UnsupportedLanguage, check_language
from parley.local.tools import Tools, update_tools
from parley.realtime.audio import WIRE_RATE
from parley.realtime.events import AudioFormat, SessionPatch, VoiceId

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Your answers are spoken aloud: keep them short and conversational, "
    "in plain sentences without lists, markup or emoji."
)
# OpenAI's built-in voice names: accepted so stock clients work, spoken with the server's default voice.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
MAX_TOKENS_CAP = 4096


@dataclass(frozen=True, slots=True)
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None

    def vad_params(self) -> VadParams:
        return VadParams(self.threshold, self.prefix_padding_ms, self.silence_duration_ms)

    def to_wire(self) -> dict[str, Any]:
        return {"type": "server_vad", **dataclasses.asdict(self)}


@dataclass(frozen=True, slots=True)
class TranscriptionConfig:
    """Transcription is on; its model follows from the session's language (``SessionConfig.to_wire``)."""

    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class SessionConfig:
    instructions: str = DEFAULT_INSTRUCTIONS
    output_modalities: tuple[Literal["text", "audio"], ...] = ("audio",)
    max_output_tokens: int | Literal["inf"] = "inf"
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    transcription: TranscriptionConfig | None = field(default_factory=TranscriptionConfig)
    voice: str = "alloy"
    speed: float = 1.0
    model: str = "parley-local"
    tools: Tools = field(default_factory=Tools)
    language: str = "en"  # what the session hears, answers in and speaks (languages.SUPPORTED)

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    def to_wire(self, session_id: str, stt_model: str) -> dict[str, Any]:
        """The session as GA events show it; ``stt_model``: the model that transcribes its language here."""
        pcm = {"type": "audio/pcm", "rate": WIRE_RATE}
        tx = self.transcription
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": {"model": stt_model, "language": self.language, "prompt": tx.prompt}
                    if tx
                    else None,
                    "noise_reduction": None,
                    "turn_detection": self.turn_detection.to_wire() if self.turn_detection else None,
                },
                "output": {"format": pcm, "voice": self.voice, "speed": self.speed},
            },
            "tools": self.tools.wire_tools(),
            "tool_choice": self.tools.wire_choice(),
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "truncation": "disabled",
            "prompt": None,
            "include": None,
        }


def defaults(*, language: str = "en", model: str = "parley-local") -> SessionConfig:
    return SessionConfig(transcription=TranscriptionConfig(), model=model, language=language)


def check_session_language(value: str | None, default: str) -> str:
    """The session language a client asks for (``fr``, ``fr-FR``...; null or empty: the server's ``default``).
    Raises ``InvalidRequest`` (``invalid_value``) naming the supported languages."""
    if not value:
        return default
    try:
        return check_language(value)
    except UnsupportedLanguage as exc:
        raise InvalidRequest(
            f"{exc}; the session keeps its language.",
            code="invalid_value",
            param="session.audio.input.transcription.language",
        ) from None


def check_format(fmt: AudioFormat | None, param: str) -> None:
    if fmt is None:
        return
    if fmt.type not in (None, "audio/pcm"):
        raise InvalidRequest(
            f"Only audio/pcm (PCM16 mono 24 kHz) is supported, not {fmt.type}.",
            param=param + ".type",
            code="invalid_value",
        )
    if fmt.rate not in (None, WIRE_RATE):
        raise InvalidRequest(
            f"Only a {WIRE_RATE} Hz sample rate is supported.", code="invalid_value", param=param + ".rate"
        )


def check_modalities(mods: Sequence[str], param: str) -> tuple[Literal["text", "audio"], ...]:
    if len(set(mods)) != 1:
        raise InvalidRequest(
            'output_modalities must be ["audio"] or ["text"].', code="invalid_value", param=param
        )
    return ("audio",) if mods[0] == "audio" else ("text",)


def check_voice(voice: str | VoiceId, voices: Sequence[str], param: str) -> str:
    name = voice.id if isinstance(voice, VoiceId) else voice
    if name in OPENAI_VOICES or name in voices or not voices:
        return name
    raise InvalidRequest(
        f"Unknown voice {name!r}. Available: {', '.join(sorted(voices))} (OpenAI voice names map to the default).",
        code="invalid_value",
        param=param,
    )


def apply_update(
    cfg: SessionConfig, patch: SessionPatch, *, voices: Sequence[str] = (), default_language: str = "en"
) -> SessionConfig:
    """Merge a ``session.update`` into ``cfg``. Fields absent from the update keep their value; ``null`` clears
    (a null ``transcription.language`` goes back to ``default_language``, the server's)."""
    sent = patch.model_fields_set
    changes: dict[str, Any] = {}
    _refuse_unsupported(patch)
    if sent & {"tools", "tool_choice"}:
        changes["tools"] = update_tools(
            cfg.tools, patch.tools, patch.tool_choice, sent=sent, prefix="session."
        )
    if "instructions" in sent:
        changes["instructions"] = patch.instructions or ""
    if "output_modalities" in sent and patch.output_modalities is not None:
        changes["output_modalities"] = check_modalities(patch.output_modalities, "session.output_modalities")
    if "max_output_tokens" in sent:
        changes["max_output_tokens"] = (
            patch.max_output_tokens if patch.max_output_tokens is not None else "inf"
        )
    audio = patch.audio
    if audio is not None and audio.input is not None:
        inp = audio.input
        check_format(inp.format, "session.audio.input.format")
        isent = inp.model_fields_set
        if inp.noise_reduction is not None:
            raise InvalidRequest(
                "noise_reduction is not supported by the local voice server (no denoiser runs here); "
                "send null or leave it out.",
                code="invalid_value",
                param="session.audio.input.noise_reduction",
            )
        if "transcription" in isent:
            tx = inp.transcription
            if tx is None:
                changes["transcription"] = None
            else:
                base = cfg.transcription or TranscriptionConfig()
                tsent = tx.model_fields_set
                # the model asked for is not stored: the one that transcribes the language here is shown
                changes["transcription"] = TranscriptionConfig(
                    prompt=tx.prompt if "prompt" in tsent else base.prompt
                )
                if "language" in tsent:
                    changes["language"] = check_session_language(tx.language, default_language)
        if "turn_detection" in isent:
            changes["turn_detection"] = _merge_turn_detection(cfg.turn_detection, inp.turn_detection)
    if audio is not None and audio.output is not None:
        out = audio.output
        check_format(out.format, "session.audio.output.format")
        if out.voice is not None:
            changes["voice"] = check_voice(out.voice, voices, "session.audio.output.voice")
        if out.speed is not None:
            changes["speed"] = out.speed
    return replace(cfg, **changes)


def _refuse_unsupported(patch: SessionPatch) -> None:
    sent = patch.model_fields_set
    if "prompt" in sent and patch.prompt is not None:
        raise InvalidRequest(
            "Stored prompts are not supported by the local voice server; send instructions instead.",
            code="invalid_value",
            param="session.prompt",
        )
    if patch.include:
        raise InvalidRequest(
            "include is not supported by the local voice server (no transcription logprobs).",
            code="invalid_value",
            param="session.include",
        )
    if "truncation" in sent and patch.truncation not in (None, "auto", "disabled"):
        raise InvalidRequest(
            'The local voice server never truncates the conversation: truncation must be "auto" or "disabled".',
            code="invalid_value",
            param="session.truncation",
        )


def _merge_turn_detection(current: TurnDetection | None, td: Any) -> TurnDetection | None:
    if td is None:
        return None
    if td.type == "semantic_vad":
        raise InvalidRequest(
            "semantic_vad is not supported by the local voice server (no end-of-turn model runs here); "
            'use {"type": "server_vad"} (silence_duration_ms sets how long a pause ends the turn).',
            code="invalid_value",
            param="session.audio.input.turn_detection.type",
        )
    base = current or TurnDetection()
    sent = td.model_fields_set
    updates = {k: getattr(td, k) for k in sent if k != "type" and k in TurnDetection.__dataclass_fields__}
    updates = {k: v for k, v in updates.items() if v is not None or k == "idle_timeout_ms"}
    return replace(base, **updates)
