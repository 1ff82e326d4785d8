"""``build_spec``: the ``ResponseSpec`` a response would run now, from the session config and a ``response.create``'s
parameters (None: an automatic response after a turn). Pure; raises ``InvalidRequest`` for parameters it refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parley.errors import InvalidRequest
from parley.local.conversation import Conversation, Item, item_from_wire
from parley.local.response_run import ResponseSpec
from parley.local.session_config import OPENAI_VOICES, SessionConfig, check_modalities, check_voice
from parley.local.tools import update_tools
from parley.realtime import events as ce
from parley.realtime.ids import new_id


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
        language=cfg.language,
    )


def _input_item(conversation: Conversation, raw: Any, param: str) -> Item:
    if isinstance(raw, ce.ItemReference):
        return conversation.get(raw.id, param=f"{param}.id")
    return item_from_wire(raw, param)[0]
