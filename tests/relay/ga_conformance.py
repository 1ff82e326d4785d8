"""The GA event types, as the stock ``openai`` SDK defines them: what a test checks the relay's frames against."""

from __future__ import annotations

import typing
from typing import Any

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

CLIENT = TypeAdapter(RealtimeClientEvent)


def _models(union: Any) -> dict[str, Any]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


CLIENT_TYPES = set(_models(RealtimeClientEvent))
SERVER_MODELS = _models(RealtimeServerEvent)
SERVER_TYPES = set(SERVER_MODELS)


def check_server_event(event: dict[str, Any]) -> None:
    """``event`` is a GA server event (strict: the SDK's pydantic model for its type validates it)."""
    assert event.get("type") in SERVER_TYPES, f"not a GA server event: {event.get('type')}"
    SERVER_MODELS[event["type"]].model_validate(event)


def check_client_event(event: dict[str, Any]) -> dict[str, Any]:
    CLIENT.validate_python(event)
    return event
