"""Typed turns: a client creates a user text item, then asks for a response, as the SDKs do.

The relay answers a typed item itself (after its context lookup), so the client's own ``response.create`` for that
item is folded into the relay's answer -- whenever it arrives: before the item is confirmed, while the lookup runs,
or after the relay's response has started (a client 20 ms slower than the upstream used to get
``conversation_already_has_active_response``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pure_session import opened

from parley.relay.session import FetchContext, RelaySession, SessionConfig, ToUpstream
from parley.relay.wire import UpstreamSessionConfig

ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "opening hours?"}]}


def _session() -> RelaySession:
    cfg = SessionConfig(
        session_id="sess_typed", provider="local", upstream=UpstreamSessionConfig(instructions="Be brief.")
    )
    return opened(RelaySession(cfg, now=0.0))


def _frame(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


def _upstream_types(actions: list[Any]) -> list[str]:
    return [json.loads(a.data)["type"] for a in actions if isinstance(a, ToUpstream)]


def _typed_turn_until(s: RelaySession, stage: str, item_id: str = "item_t1") -> None:
    """Drive one typed turn up to ``stage``: added (lookup running), requested (relay sent response.create),
    created (response running), done (response finished)."""
    s.on_client_text(_frame("conversation.item.create", item=ITEM), 1.0)
    actions = s.on_upstream_text(_frame("conversation.item.added", item={**ITEM, "id": item_id}), 1.01)
    if stage == "added":
        return
    (fetch,) = [a for a in actions if isinstance(a, FetchContext)]
    assert _upstream_types(s.on_context(fetch, None, "ok", 1.0, 1.02)) == ["response.create"]
    if stage == "requested":
        return
    s.on_upstream_text(_frame("response.created", response={"id": "resp_1"}), 1.03)
    if stage == "created":
        return
    s.on_upstream_text(_frame("response.done", response={"id": "resp_1", "status": "completed"}), 1.5)


@pytest.mark.parametrize("stage", ["added", "requested", "created", "done"])
def test_the_clients_response_create_for_its_typed_item_is_folded_at_any_stage(stage: str) -> None:
    s = _session()
    _typed_turn_until(s, stage)
    assert _upstream_types(s.on_client_text(_frame("response.create"), 1.6)) == []


def test_only_one_response_create_is_owed_per_typed_item() -> None:
    s = _session()
    _typed_turn_until(s, "done")
    assert _upstream_types(s.on_client_text(_frame("response.create"), 1.6)) == []
    # a second request is the client's own: forwarded (e.g. "say more")
    assert _upstream_types(s.on_client_text(_frame("response.create"), 1.7)) == ["response.create"]


def test_a_spoken_turn_clears_what_a_typed_item_was_owed() -> None:
    s = _session()
    _typed_turn_until(s, "done")
    s.on_upstream_text(_frame("input_audio_buffer.speech_started", audio_start_ms=10), 2.0)
    # the client no longer owes anything for the typed item; its response.create is forwarded
    assert _upstream_types(s.on_client_text(_frame("response.create"), 2.1)) == ["response.create"]
