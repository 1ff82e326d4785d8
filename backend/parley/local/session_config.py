"""The effective configuration of one local voice session: OpenAI-like defaults, ``session.update`` merging with
validation, and the full GA ``session`` object sent in ``session.created`` / ``session.updated``.

Pure data: no I/O. ``apply_update`` either returns a new config or raises ``InvalidRequest`` (nothing changes).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from parley.errors import InvalidRequest
from parley.local.engines import VadParams
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
    model: str = "whisper-1"
    language: str | None = "en"
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

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    def to_wire(self, session_id: str) -> dict[str, Any]:
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
                    "transcription": dataclasses.asdict(tx) if tx else None,
                    "noise_reduction": None,
                    "turn_detection": self.turn_detection.to_wire() if self.turn_detection else None,
                },
                "output": {"format": pcm, "voice": self.voice, "speed": self.speed},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": self.max_output_tokens,
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
        }


def defaults(*, language: str | None = "en", model: str = "parley-local") -> SessionConfig:
    return SessionConfig(transcription=TranscriptionConfig(language=language), model=model)


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


def apply_update(cfg: SessionConfig, patch: SessionPatch, *, voices: Sequence[str] = ()) -> SessionConfig:
    """Merge a ``session.update`` into ``cfg``. Fields absent from the update keep their value; ``null`` clears."""
    sent = patch.model_fields_set
    changes: dict[str, Any] = {}
    if "tools" in sent and patch.tools:
        raise InvalidRequest(
            "Tools are not supported by the local voice server.", code="invalid_value", param="session.tools"
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
        if "transcription" in isent:
            tx = inp.transcription
            if tx is None:
                changes["transcription"] = None
            else:
                base = cfg.transcription or TranscriptionConfig()
                tsent = tx.model_fields_set
                changes["transcription"] = TranscriptionConfig(
                    model=tx.model if "model" in tsent and tx.model else base.model,
                    language=tx.language if "language" in tsent else base.language,
                    prompt=tx.prompt if "prompt" in tsent else base.prompt,
                )
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


def _merge_turn_detection(current: TurnDetection | None, td: Any) -> TurnDetection | None:
    if td is None:
        return None
    base = current or TurnDetection()
    sent = td.model_fields_set
    updates = {k: getattr(td, k) for k in sent if k != "type" and k in TurnDetection.__dataclass_fields__}
    if td.type == "semantic_vad":
        # No semantic turn model here: the server VAD with its defaults (or current values) stands in.
        logger.info("semantic_vad requested: using server_vad (eagerness %s ignored)", td.eagerness)
    updates = {k: v for k, v in updates.items() if v is not None or k == "idle_timeout_ms"}
    return replace(base, **updates)
