"""Pure tests of what a GA client sees and may change through the relay: the first frame, Parley's own events only
on request, ``session.update`` under the operator's policy with ``session.updated`` back, and the client events
real clients send (retrieve, delete, function_call_output, response.create with metadata)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pure_session import opened

from parley.relay.actions import CloseSession
from parley.relay.policy import Policy
from parley.relay.session import FetchContext, RelaySession, SessionConfig, ToClient, ToUpstream
from parley.relay.wire import UpstreamSessionConfig

OPERATOR = "Be brief."


def make(*, events: bool = False, policy: Policy | None = None, **kw: Any) -> RelaySession:
    cfg = SessionConfig(
        session_id="sess_ga",
        provider="local",
        upstream=UpstreamSessionConfig(instructions=OPERATOR, voice="marin"),
        parley_events=events,
        policy=policy or Policy(),
        **kw,
    )
    return RelaySession(cfg, now=0.0)


def ev(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


def client(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToClient)]


def upstream(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToUpstream)]


def updated_for(update: dict[str, Any]) -> str:
    """What an upstream answers to ``update``: its session (enough for these tests)."""
    return ev("session.updated", event_id="event_up", session=update["session"])


def test_a_client_that_does_not_ask_gets_a_pure_ga_stream() -> None:
    s = make(idle_timeout_s=5.0)
    (first,) = upstream(s.start(0.0))
    assert s.on_upstream_text(ev("session.created", session={"id": "sess_up"}), 0.01) == []
    (created,) = client(s.on_upstream_text(updated_for(first), 0.02))  # no parley.session after it
    assert created["type"] == "session.created"
    s.on_upstream_text(ev("input_audio_buffer.speech_stopped", audio_end_ms=900), 1.0)
    turn = s.on_upstream_text(
        ev("conversation.item.input_audio_transcription.completed", item_id="u1", transcript="opening hours"),
        1.1,
    )
    (fetch,) = [a for a in turn if isinstance(a, FetchContext)]
    assert client(s.on_context(fetch, None, "error", 5.0, 1.2)) == []  # no parley.warning, no parley.context
    s.on_upstream_text(ev("response.created", response={"id": "r1"}), 1.3)
    done = client(s.on_upstream_text(ev("response.done", response={"id": "r1", "status": "completed"}), 2.0))
    assert [e["type"] for e in done] == ["response.done"]  # no parley.turn
    assert s.tick(30.0)[-1] == CloseSession(1000, "idle_timeout")
    s2 = make(idle_timeout_s=5.0)
    opened(s2)
    err, close = s2.tick(30.0)
    assert json.loads(err.data)["error"]["code"] == "idle_timeout"  # type: ignore[union-attr]
    assert close == CloseSession(1000, "idle_timeout")


@pytest.mark.parametrize("events", [False, True])
def test_the_upstreams_own_extensions_reach_only_a_client_that_asked(events: bool) -> None:
    s = opened(make(events=events))
    timing = ev("parley.timing", response_id="r1", first_audio=12.0)
    assert s.on_upstream_text(timing, 1.0) == ([ToClient(timing)] if events else [])
    late_type = json.dumps({"event_id": "e1", "type": "parley.timing"})  # type not first: parsed, same rule
    assert s.on_upstream_text(late_type, 1.0) == ([ToClient(late_type)] if events else [])


def test_session_created_is_the_first_frame_even_after_an_early_refusal() -> None:
    s = make(events=True)
    (first,) = upstream(s.start(0.0))
    assert s.on_client_text(ev("made.up", event_id="e1"), 0.001) == []  # waits for session.created
    frames = client(s.on_upstream_text(updated_for(first), 0.01))
    assert [f["type"] for f in frames] == ["session.created", "error", "parley.session"]  # in their order
    assert frames[1]["error"]["event_id"] == "e1"


def test_session_update_applies_what_the_policy_allows_and_names_what_it_refused() -> None:
    s = opened(make())
    update = {
        "type": "realtime",
        "model": "gpt-realtime",  # connection-level: accepted, not forwarded
        "tracing": "auto",
        "instructions": "Talk like a pirate.",
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},  # the operator's: a no-op
                # the model is the upstream's (accepted, not forwarded: Pipecat's example sends one); language allowed
                "transcription": {"model": "whisper-1", "language": "fr"},
                "turn_detection": {
                    "type": "semantic_vad",
                    "interrupt_response": True,
                    "create_response": True,
                },
            },
            "output": {"voice": "ash", "format": {"type": "audio/pcmu"}},
        },
    }
    actions = s.on_client_text(ev("session.update", event_id="cli_1", session=update), 1.0)
    (err,) = client(actions)
    assert err["error"]["code"] == "session_field_not_allowed" and err["error"]["event_id"] == "cli_1"
    assert "transcription" not in err["error"]["message"]
    assert "audio.output.format" in err["error"]["message"]
    (sent,) = upstream(actions)
    patch = sent["session"]
    assert "model" not in patch and "tracing" not in patch
    assert patch["instructions"] == f"{OPERATOR}\n\nTalk like a pirate."  # appended to the operator's
    assert patch["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "create_response": False,  # the relay's: it answers each turn after the knowledge lookup
        "interrupt_response": True,
    }
    assert patch["audio"]["input"]["transcription"] == {"language": "fr"}
    assert patch["audio"]["output"] == {"voice": "ash"} and patch["tools"][0]["name"] == "weather"
    effective = {**patch, "id": "sess_upstream", "model": "parley-local"}
    (shown,) = client(s.on_upstream_text(ev("session.updated", session=effective), 1.1))
    assert shown["type"] == "session.updated"
    view = shown["session"]
    assert view["id"] == "sess_ga" and view["instructions"] == "Talk like a pirate."
    assert view["audio"]["input"]["turn_detection"]["create_response"] is True
    assert view["model"] == "parley-local"  # what applies, not what was asked


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"audio": {"input": {"turn_detection": None}}}, "audio.input.turn_detection"),
        ({"audio": {"input": {"transcription": None}}}, "audio.input.transcription"),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}},
            "audio.input.turn_detection",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 50}}}},
            "audio.input.turn_detection",
        ),
        ({"prompt": {"id": "pmpt_123"}}, "prompt"),
        ({"output_modalities": ["audio", "text"]}, "output_modalities"),
        ({"made_up": 1}, "made_up"),
    ],
)
def test_locked_or_invalid_fields_are_refused_by_name(session: dict[str, Any], param: str) -> None:
    s = opened(make())
    actions = s.on_client_text(ev("session.update", session=session), 1.0)
    (err,) = client(actions)
    assert err["error"]["param"] == f"session.{param}", err
    (sent,) = upstream(actions)  # the rest (here: nothing) still goes, so the client gets session.updated
    assert sent["session"] == {"type": "realtime"}


def test_a_field_the_operator_did_not_list_is_locked_but_its_own_value_passes() -> None:
    s = opened(make(policy=Policy(fields=frozenset({"instructions"}))))
    same = {"audio": {"output": {"voice": "marin"}}, "instructions": "Hi"}
    actions = s.on_client_text(ev("session.update", session=same), 1.0)
    assert not client(actions)
    actions = s.on_client_text(ev("session.update", session={"audio": {"output": {"voice": "ash"}}}), 1.0)
    assert client(actions)[0]["error"]["param"] == "session.audio.output.voice"


def test_instructions_may_replace_the_operators() -> None:
    s = opened(make(policy=Policy(instructions="replace")))
    (sent,) = upstream(s.on_client_text(ev("session.update", session={"instructions": "Only French."}), 1.0))
    assert sent["session"]["instructions"] == "Only French."


def test_an_update_the_upstream_refuses_is_the_clients_error_and_changes_nothing() -> None:
    s = opened(make())
    (sent,) = upstream(
        s.on_client_text(
            ev("session.update", event_id="c9", session={"audio": {"output": {"voice": "x"}}}), 1
        )
    )
    refusal = ev(
        "error",
        error={"type": "invalid_request_error", "code": "invalid_value", "event_id": sent["event_id"]},
    )
    (err,) = client(s.on_upstream_text(refusal, 1.1))
    assert err["error"]["event_id"] == "c9" and err["error"]["code"] == "invalid_value"
    # a failover re-applies only what the upstream accepted
    (update, *_) = upstream(
        s.upstream_moved("local", UpstreamSessionConfig(instructions=OPERATOR), self_interrupts=True)
    )
    assert "voice" not in update["session"]["audio"]["output"]


def test_a_new_upstream_gets_the_clients_session_and_its_answer_is_nobodys() -> None:
    s = opened(make())
    update = {"instructions": "Pirate.", "audio": {"output": {"voice": "ash"}}}
    (sent,) = upstream(s.on_client_text(ev("session.update", session=update), 1.0))
    s.on_upstream_text(updated_for(sent), 1.1)
    s.upstream_lost("gone", 2.0, moving=True)
    (moved, *_) = upstream(
        s.upstream_moved("local", UpstreamSessionConfig(instructions=OPERATOR), self_interrupts=True)
    )
    assert moved["session"]["instructions"] == f"{OPERATOR}\n\nPirate."
    assert moved["session"]["audio"]["output"]["voice"] == "ash"
    assert moved["session"]["audio"]["input"]["turn_detection"]["create_response"] is False
    assert client(s.on_upstream_text(updated_for(moved), 2.1)) == []


# --- client events ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["conversation.item.retrieve", "conversation.item.delete"])
def test_a_client_reads_and_deletes_its_own_items_but_not_the_relays(kind: str) -> None:
    s = opened(make())
    own = ev(kind, item_id="item_abc")
    assert s.on_client_text(own, 1.0) == [ToUpstream(own)]
    for relays in ("parley_ctx_1", "parley_replay_3"):
        actions = s.on_client_text(ev(kind, item_id=relays), 1.0)
        assert client(actions)[0]["error"]["code"] == "item_not_allowed" and not upstream(actions)
    truncate = ev("conversation.item.truncate", item_id="parley_ctx_1", content_index=0, audio_end_ms=0)
    assert client(s.on_client_text(truncate, 1.0))[0]["error"]["code"] == "item_not_allowed"
    spoof = ev(
        "conversation.item.create",
        item={
            "id": "parley_ctx_9",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "x"}],
        },
    )
    assert client(s.on_client_text(spoof, 1.0))[0]["error"]["code"] == "item_not_allowed"


def _tool_turn(s: RelaySession) -> None:
    """A spoken turn whose answer is a function call, finished."""
    s.on_upstream_text(ev("input_audio_buffer.speech_stopped", audio_end_ms=900), 1.0)
    (fetch,) = [
        a
        for a in s.on_upstream_text(
            ev("conversation.item.input_audio_transcription.completed", item_id="u1", transcript="weather?"),
            1.1,
        )
        if isinstance(a, FetchContext)
    ]
    s.on_context(fetch, None, "ok", 1.0, 1.2)
    s.on_upstream_text(ev("response.created", response={"id": "r1"}), 1.3)
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"}
    for frame in (
        ev("response.output_item.added", response_id="r1", output_index=0, item=call),
        ev(
            "response.function_call_arguments.delta",
            response_id="r1",
            item_id="fc_1",
            call_id="call_1",
            delta="{}",
        ),
        ev(
            "response.function_call_arguments.done",
            response_id="r1",
            item_id="fc_1",
            call_id="call_1",
            arguments="{}",
        ),
    ):
        assert s.on_upstream_text(frame, 1.4) == [ToClient(frame)]
    s.on_upstream_text(
        ev("response.done", response={"id": "r1", "status": "completed", "output": [call]}), 1.5
    )


def test_a_function_call_output_and_its_response_create_continue_the_answer() -> None:
    s = opened(make())
    _tool_turn(s)
    output = ev(
        "conversation.item.create",
        item={"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "blue"}'},
    )
    assert s.on_client_text(output, 2.0) == [ToUpstream(output)]
    added = ev(
        "conversation.item.added", item={"id": "fco_1", "type": "function_call_output", "call_id": "call_1"}
    )
    assert [a for a in s.on_upstream_text(added, 2.01) if not isinstance(a, ToClient)] == []  # no relay turn
    create = ev("response.create")
    assert s.on_client_text(create, 2.02) == [ToUpstream(create)]  # not folded


def test_response_create_carries_metadata_and_allowed_fields() -> None:
    s = opened(make())
    create = ev(
        "response.create", response={"metadata": {"client_event_id": "lk_1"}, "instructions": "Shout."}
    )
    (sent,) = upstream(s.on_client_text(create, 1.0))
    assert sent["response"]["metadata"] == {"client_event_id": "lk_1"}
    assert sent["response"]["instructions"] == f"{OPERATOR}\n\nShout."


def test_a_folded_response_create_lends_its_metadata_to_the_relays_answer() -> None:
    s = opened(make())
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "opening hours?"}]}
    s.on_client_text(ev("conversation.item.create", item=item), 1.0)
    meta = {"metadata": {"client_event_id": "lk_2"}}
    assert s.on_client_text(ev("response.create", response=meta), 1.01) == []  # folded into the relay's turn
    added = s.on_upstream_text(ev("conversation.item.added", item={"id": "item_t", **item}), 1.02)
    (fetch,) = [a for a in added if isinstance(a, FetchContext)]
    (create,) = upstream(s.on_context(fetch, None, "ok", 1.0, 1.1))
    assert create["type"] == "response.create" and create["response"]["metadata"] == {
        "client_event_id": "lk_2"
    }
