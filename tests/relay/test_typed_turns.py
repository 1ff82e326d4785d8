"""Typed turns: a client creates a user text item, then asks for a response, as the GA API wants.

The relay looks the item's words up in the knowledge base as soon as the upstream confirms the item, but sends its
own ``response.create`` (context first) only once the client has asked too -- before or after the lookup ends.
So whatever the client sends between its item and its request (Pipecat: a ``session.update`` with its tools)
reaches the upstream first, and an item nobody asks about is not answered.
"""

from __future__ import annotations

import json
from typing import Any

from parley.relay.session import FetchContext, RelaySession, SessionConfig, ToUpstream
from parley.relay.wire import UpstreamSessionConfig

ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "opening hours?"}]}


def _session() -> RelaySession:
    cfg = SessionConfig(
        session_id="sess_typed", provider="local", upstream=UpstreamSessionConfig(instructions="Be brief.")
    )
    s = RelaySession(cfg, now=0.0)
    s.start(0.0)
    s.on_upstream_text(json.dumps({"type": "session.created", "session": {}}), 0.01)
    return s


def _frame(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


def _upstream(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToUpstream)]


def _types(actions: list[Any]) -> list[str]:
    return [e["type"] for e in _upstream(actions)]


def _confirm(s: RelaySession, item_id: str = "item_t1") -> FetchContext:
    actions = s.on_upstream_text(_frame("conversation.item.added", item={**ITEM, "id": item_id}), 1.01)
    (fetch,) = [a for a in actions if isinstance(a, FetchContext)]
    return fetch


def test_the_answer_waits_for_the_clients_request_when_the_lookup_ends_first() -> None:
    s = _session()
    assert _types(s.on_client_text(_frame("conversation.item.create", item=ITEM), 1.0)) == [
        "conversation.item.create"
    ]
    fetch = _confirm(s)
    assert _types(s.on_context(fetch, None, "ok", 1.0, 1.02)) == []  # nobody asked yet
    # Pipecat's order: its tools update comes between the item and the request, and reaches the upstream first
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    assert _types(
        s.on_client_text(_frame("session.update", session={"type": "realtime", "tools": tools}), 1.1)
    ) == ["session.update"]
    (create,) = _upstream(s.on_client_text(_frame("response.create", response={"metadata": {"k": "v"}}), 1.2))
    assert create["type"] == "response.create" and create["response"]["metadata"] == {"k": "v"}


def test_a_request_before_the_item_is_confirmed_is_answered_when_the_lookup_ends() -> None:
    s = _session()
    s.on_client_text(_frame("conversation.item.create", item=ITEM), 1.0)
    assert (
        _types(s.on_client_text(_frame("response.create"), 1.001)) == []
    )  # the relay's comes with the context
    fetch = _confirm(s)
    assert _types(s.on_context(fetch, None, "ok", 1.0, 1.02)) == ["response.create"]


def test_a_request_during_the_lookup_is_answered_when_it_ends() -> None:
    s = _session()
    s.on_client_text(_frame("conversation.item.create", item=ITEM), 1.0)
    fetch = _confirm(s)
    assert _types(s.on_client_text(_frame("response.create"), 1.015)) == []
    assert _types(s.on_context(fetch, None, "ok", 1.0, 1.02)) == ["response.create"]


def test_an_item_nobody_asks_about_is_not_answered_and_is_not_busy() -> None:
    s = _session()
    s.on_client_text(_frame("conversation.item.create", item=ITEM), 1.0)
    assert _types(s.on_context(_confirm(s), None, "ok", 1.0, 1.02)) == []
    assert not s.busy  # the idle timeout still counts: nothing is being prepared
    # a later request, after a spoken turn took over, is the client's own: forwarded
    s.on_upstream_text(_frame("input_audio_buffer.speech_started", audio_start_ms=10), 2.0)
    assert _types(s.on_client_text(_frame("response.create"), 2.1)) == ["response.create"]


def test_a_second_request_after_the_answer_is_the_clients_own() -> None:
    s = _session()
    s.on_client_text(_frame("conversation.item.create", item=ITEM), 1.0)
    s.on_client_text(_frame("response.create"), 1.001)
    assert _types(s.on_context(_confirm(s), None, "ok", 1.0, 1.02)) == ["response.create"]
    s.on_upstream_text(_frame("response.created", response={"id": "resp_1"}), 1.03)
    s.on_upstream_text(_frame("response.done", response={"id": "resp_1", "status": "completed"}), 1.5)
    assert _types(s.on_client_text(_frame("response.create"), 1.6)) == ["response.create"]  # "say more"
