"""The response being answered, as the protocol sees it: its spec, its events (``ResponseRun``), its phase and its
timings. Pure; ``parley.local.protocol`` owns the one active ``Response``.

Phases: ``AWAITING_TRANSCRIPTS`` (``response.created`` is out; the transcripts of its input items are still
running, so its request is not known yet) and ``GENERATING`` (its ``Plan`` went to the engines, or was adopted from
the speculation). ``build_spec`` turns the session config and a ``response.create``'s parameters into the
``ResponseSpec``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parley.errors import InvalidRequest
from parley.local.conversation import Conversation, Item, item_from_wire
from parley.local.engines import LLMChunk, ToolCallDelta
from parley.local.response_run import ResponseRun, ResponseSpec
from parley.local.session_config import OPENAI_VOICES, SessionConfig, check_modalities, check_voice
from parley.local.tools import update_tools
from parley.realtime import events as ce
from parley.realtime.ids import new_id

Event = dict[str, Any]
TRANSCRIPT_WAIT_S = 30.0


class ResponsePhase(enum.Enum):
    AWAITING_TRANSCRIPTS = "awaiting_transcripts"
    GENERATING = "generating"


@dataclass(slots=True)
class Response:
    spec: ResponseSpec
    run: ResponseRun
    started: float  # clock seconds
    base: float  # what its timings count from: its turn's speech_stopped, else its start
    waiting: set[str]  # items whose transcripts it waits for
    phase: ResponsePhase = ResponsePhase.AWAITING_TRANSCRIPTS
    marks: dict[str, float] = field(default_factory=dict)  # preemptive_start, llm_first_token, first_audio
    audio_seen: bool = False

    @property
    def deadline(self) -> float | None:
        waits = self.phase is ResponsePhase.AWAITING_TRANSCRIPTS
        return self.started + TRANSCRIPT_WAIT_S if waits else None

    def take(self, chunk: LLMChunk, now: float) -> list[Event]:
        """One item of the LLM stream into the run: the events it makes now."""
        self.marks.setdefault("llm_first_token", now)
        if isinstance(chunk, str):
            return self.run.llm_delta(chunk)
        if isinstance(chunk, ToolCallDelta):
            return self.run.tool_delta(chunk)
        self.run.llm_end(chunk)
        return []

    def audio(self, pcm: bytes, now: float) -> tuple[list[Event], bool]:
        """Audio of the current phrase; True the first time audio went out (the idle timeout counts from it)."""
        self.marks.setdefault("first_audio", now)
        events = self.run.audio(pcm)
        first = not self.audio_seen and self.run.item.audio_ms > 0
        self.audio_seen = self.audio_seen or first
        return events, first

    def timings_ms(self) -> dict[str, float]:
        out = {f"{k}_ms": (v - self.base) * 1000.0 for k, v in self.marks.items()}
        out["response_start_ms"] = (self.started - self.base) * 1000.0
        return out


def build_spec(
    cfg: SessionConfig,
    params: ce.ResponseParams | None,
    *,
    conversation: Conversation,
    conversation_id: str,
    voices: Sequence[str],
    llm_max_tokens: int,
    event_id: str | None = None,
    trigger: str | None = None,
) -> ResponseSpec:
    """The response that ``params`` (None: an automatic one after a turn) would run now. No side effects."""
    p = params or ce.ResponseParams()
    sent = p.model_fields_set
    modalities = cfg.output_modalities
    if p.output_modalities is not None:
        modalities = check_modalities(p.output_modalities, "response.output_modalities")
    voice = cfg.voice
    if p.audio and p.audio.output and p.audio.output.voice is not None:
        voice = check_voice(p.audio.output.voice, voices, "response.audio.output.voice")
    max_out = (
        p.max_output_tokens if "max_output_tokens" in sent and p.max_output_tokens else cfg.max_output_tokens
    )
    if p.conversation not in (None, "auto", "none"):
        raise InvalidRequest(
            "conversation must be 'auto' or 'none'.", code="invalid_value", param="response.conversation"
        )
    if "prompt" in sent and p.prompt is not None:
        raise InvalidRequest(
            "Stored prompts are not supported by the local voice server; send instructions instead.",
            code="invalid_value",
            param="response.prompt",
        )
    tools = update_tools(cfg.tools, p.tools, p.tool_choice, sent=sent, prefix="response.")
    inputs = tuple(_input_item(conversation, i, f"response.input.{n}") for n, i in enumerate(p.input or []))
    return ResponseSpec(
        id=new_id("response"),
        instructions=p.instructions if p.instructions is not None else cfg.instructions,
        modalities=modalities,
        voice=voice,
        tts_voice=None if voice in OPENAI_VOICES else voice,
        max_tokens=llm_max_tokens if max_out == "inf" else int(max_out),
        max_output_tokens=max_out,
        conversation_id=None if p.conversation == "none" else conversation_id,
        input_items=inputs if p.input is not None else None,
        metadata=p.metadata,
        event_id=event_id,
        trigger_item_id=trigger,
        tools=tools,
        speed=cfg.speed,
    )


def _input_item(conversation: Conversation, raw: Any, param: str) -> Item:
    if isinstance(raw, ce.ItemReference):
        return conversation.get(raw.id, param=f"{param}.id")
    return item_from_wire(raw, param)[0]
