"""Which conversation items a client may create, read, delete or truncate through the relay.

The conversation is the client's, except what the operator put in it: the relay's context items (the knowledge
base's passages, ``parley_ctx_*``) and the items it replayed into a new upstream (``parley_replay_*``). Every id
starting with ``parley_`` is the relay's: a client can neither create an item with such an id, nor retrieve,
delete or truncate one, nor place an item after one. Anything else the client has seen is its own.

A client may create: user messages (``input_text``), assistant messages (``output_text``, to seed a history),
``function_call`` items (history) and ``function_call_output`` items (the result of a tool the model called).
System messages are the operator's (a client sets instructions with ``session.update``, under the policy).

Pure checks: they return what the item is, or raise InvalidRequest / NotAllowed.
"""

from __future__ import annotations

from typing import Any, Literal

from parley.errors import InvalidRequest, NotAllowed

RESERVED_PREFIX = "parley_"
MAX_OUTPUT_CHARS = 100_000

ItemKind = Literal["user_text", "assistant_text", "system_text", "function_call", "function_call_output"]


def _reserved(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(RESERVED_PREFIX)


def check_item_ref(ev: dict[str, Any]) -> str:
    """``conversation.item.retrieve`` / ``.delete`` / ``.truncate``: the item must be the client's."""
    item_id = ev.get("item_id")
    if not isinstance(item_id, str) or not item_id:
        raise InvalidRequest("item_id must be a string", param="item_id")
    if _reserved(item_id):
        raise NotAllowed("that item belongs to the relay", code="item_not_allowed", param="item_id")
    return item_id


def _parts(content: Any, part_type: str) -> str:
    if not isinstance(content, list) or not content:
        raise InvalidRequest("item.content must be a non-empty list", param="item.content")
    texts = []
    for part in content:
        if (
            not isinstance(part, dict)
            or part.get("type") != part_type
            or not isinstance(part.get("text"), str)
        ):
            raise NotAllowed(f"only {part_type} content is allowed in this item", param="item.content")
        texts.append(part["text"])
    return " ".join(texts).strip()


def check_item_create(ev: dict[str, Any]) -> tuple[ItemKind, str]:
    """A client ``conversation.item.create``: the kind of item and its text (user messages)."""
    item = ev.get("item")
    if not isinstance(item, dict):
        raise InvalidRequest("item must be an object", param="item")
    if _reserved(item.get("id")) or _reserved(ev.get("previous_item_id")):
        raise NotAllowed(
            "ids starting with parley_ are the relay's", code="item_not_allowed", param="item.id"
        )
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role == "user":
            return "user_text", _parts(item.get("content"), "input_text")
        if role == "assistant":
            return "assistant_text", _parts(item.get("content"), "output_text")
        if role == "system":  # allowed when the policy lets clients set instructions (the session checks)
            return "system_text", _parts(item.get("content"), "input_text")
        raise NotAllowed("only user, assistant and system messages may be created", param="item.role")
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
            raise InvalidRequest("function_call_output needs call_id and output strings", param="item")
        if len(item["output"]) > MAX_OUTPUT_CHARS:
            raise InvalidRequest(f"output over {MAX_OUTPUT_CHARS} characters", param="item.output")
        return "function_call_output", ""
    if kind == "function_call":
        if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
            raise InvalidRequest("function_call needs call_id, name and arguments strings", param="item")
        return "function_call", ""
    raise NotAllowed(
        f"items of type {str(kind)[:40]!r} may not be created through the relay", param="item.type"
    )
