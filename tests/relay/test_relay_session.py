"""Pure tests of the relay session logic: frames in, actions out, the clock scripted."""

from __future__ import annotations

import base64
import json
from typing import Any

from pure_session import opened

from parley.relay.context import Context, Passage
from parley.relay.policy import Policy
from parley.relay.session import (
    CloseSession,
    FetchContext,
    RelaySession,
    SessionConfig,
    ToClient,
    ToUpstream,
    TurnDone,
)
from parley.relay.wire import UpstreamSessionConfig


def make(now: float = 100.0, **kw: Any) -> RelaySession:
    cfg = SessionConfig(
        session_id="sess_test",
        provider="local",
        parley_events=kw.pop("parley_events", True),  # these tests read parley.* events (default: pure GA)
        upstream=UpstreamSessionConfig(instructions="Be brief.", voice="marin"),
        **kw,
    )
    return opened(RelaySession(cfg, now=now), now)


def ev(type_: str, **fields: Any) -> str:
    """A frame as the relay itself writes JSON, so a forwarded client frame compares equal to what was sent."""
    return json.dumps({"type": type_, **fields}, separators=(",", ":"), ensure_ascii=False)


def to_client(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToClient)]


def to_upstream(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToUpstream)]


def append(ms: int = 100) -> str:
    return ev("input_audio_buffer.append", audio=base64.b64encode(b"\0" * 48 * ms).decode())


def test_start_configures_upstream_and_tells_client() -> None:
    s = RelaySession(make().cfg, now=100.0)
    actions = s.start(100.0)
    assert not to_client(actions)  # session.created comes first, and only once the upstream is configured
    (update,) = to_upstream(actions)
    assert update["type"] == "session.update"
    sess = update["session"]
    assert sess["type"] == "realtime" and sess["instructions"] == "Be brief."
    td = sess["audio"]["input"]["turn_detection"]
    assert td == {"type": "server_vad", "create_response": False, "interrupt_response": True}
    assert sess["audio"]["input"]["transcription"]["model"]
    assert sess["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert sess["audio"]["output"]["voice"] == "marin"
    # the upstream's session.created is held; its answer to the relay's update is the client's session.created
    assert s.on_upstream_text(ev("session.created", session={"id": "sess_up"}), 100.05) == []
    created, info = to_client(s.on_upstream_text(ev("session.updated", session=sess), 100.1))
    assert created["type"] == "session.created" and created["session"]["id"] == "sess_test"
    assert created["session"]["instructions"] == ""  # the operator's instructions are not shown
    assert created["session"]["audio"]["input"]["turn_detection"]["create_response"] is True
    assert info["type"] == "parley.session" and info["status"] == "active"
    assert info["session_id"] == "sess_test" and info["provider"] == "local"


def test_allowed_client_events_are_forwarded_unchanged() -> None:
    s = make()
    frames = [
        append(),
        ev("input_audio_buffer.commit"),
        ev("input_audio_buffer.clear"),
        ev("response.cancel"),
        ev("conversation.item.truncate", item_id="item_1", content_index=0, audio_end_ms=1200),
        ev("response.create"),
        ev("response.create", response={}),
    ]
    for frame in frames:
        assert s.on_client_text(frame, 101.0) == [ToUpstream(frame)]


def test_events_outside_the_allowlist_get_event_not_allowed_and_the_session_lives() -> None:
    s = make()
    bad = [
        ev("transcription_session.update", session={}, event_id="evt_1"),
        ev("response.create", response={"input": []}),
        ev("response.create", response={"conversation": "none"}),
        ev("response.create", response={"prompt": {"id": "pmpt_1"}}),
        ev("conversation.item.create", item={"type": "message", "role": "developer", "content": []}),
        ev(
            "conversation.item.create",
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]},
        ),
        ev("conversation.item.create", item={"type": "mcp_call", "id": "x"}),
        ev("output_audio_buffer.clear"),
        ev("made.up"),
    ]
    for frame in bad:
        actions = s.on_client_text(frame, 101.0)
        (err,) = to_client(actions)
        assert err["type"] == "error" and err["error"]["code"] == "event_not_allowed", frame
        assert not to_upstream(actions)
    assert to_client(s.on_client_text(bad[0], 101.0))[0]["error"]["event_id"] == "evt_1"
    assert not s.closed
    assert s.on_client_text(append(), 102.0)  # still forwarding


def test_malformed_frames_and_frame_cap() -> None:
    s = make(max_frame_bytes=1000)
    (err,) = to_client(s.on_client_text("{not json", 1.0))
    assert err["error"]["code"] == "invalid_json"
    (err,) = to_client(s.on_client_text(append(ms=100), 1.0))  # 4800 bytes of PCM, > 1000 bytes of JSON
    assert err["error"]["code"] == "frame_too_large"
    (err,) = to_client(s.on_client_text(ev("conversation.item.truncate", item_id="i", audio_end_ms=-5), 1.0))
    assert err["error"]["code"] == "invalid_request"
    assert s.on_client_bytes(append(ms=5).encode(), 1.0)[0] == ToUpstream(append(ms=5))


class _Rate:
    def __init__(self, budget_ms: int) -> None:
        self.budget = budget_ms
        self.seen: list[int] = []

    def allow(self, audio_ms: int, now: float) -> bool:
        self.seen.append(audio_ms)
        self.budget -= audio_ms
        return self.budget >= 0


def test_audio_over_the_rate_is_dropped_with_an_error() -> None:
    rate = _Rate(250)
    s = opened(RelaySession(make().cfg, now=0.0, audio_rate=rate))
    assert to_upstream(s.on_client_text(append(100), 0.1))
    assert to_upstream(s.on_client_text(append(100), 0.2))
    actions = s.on_client_text(append(100), 0.3)
    assert not to_upstream(actions)
    assert to_client(actions)[0]["error"]["code"] == "audio_rate_limited"
    assert rate.seen == [100, 100, 100]


def spoken_turn(
    s: RelaySession, transcript: str = "what is the refund policy", *, t: float = 10.0, item: str = "item_u1"
) -> list[Any]:
    assert to_client(s.on_upstream_text(ev("input_audio_buffer.speech_started", audio_start_ms=0), t))
    s.on_upstream_text(ev("input_audio_buffer.speech_stopped", audio_end_ms=900), t + 1.0)
    s.on_upstream_text(ev("input_audio_buffer.committed", item_id=item), t + 1.01)
    return s.on_upstream_text(
        ev("conversation.item.input_audio_transcription.completed", item_id=item, transcript=transcript),
        t + 1.2,
    )


def answer(s: RelaySession, t: float) -> list[Any]:
    s.on_upstream_text(ev("response.created", response={"id": "resp_1", "status": "in_progress"}), t)
    s.on_upstream_text(ev("response.output_audio.delta", response_id="resp_1", delta="AAAA"), t + 0.1)
    s.on_upstream_text(ev("response.output_audio.delta", response_id="resp_1", delta="AAAA"), t + 0.2)
    return s.on_upstream_text(ev("response.done", response={"id": "resp_1", "status": "completed"}), t + 1.0)


def test_turn_with_context_injects_system_item_then_response_create() -> None:
    s = make()
    actions = spoken_turn(s)
    assert to_client(actions)[0]["type"] == "conversation.item.input_audio_transcription.completed"
    (fetch,) = [a for a in actions if isinstance(a, FetchContext)]
    assert fetch.query == "what is the refund policy"
    assert s.busy
    ctx = Context([Passage("Refunds within 30 days.", "policy.md", 0.9), Passage("More.", "faq.md", 0.5)])
    actions = s.on_context(fetch, ctx, "ok", 1.0, 11.35)
    item, create = to_upstream(actions)
    assert item["type"] == "conversation.item.create" and item["item"]["role"] == "system"
    assert item["item"]["content"][0]["type"] == "input_text"
    assert "Refunds within 30 days." in item["item"]["content"][0]["text"]
    assert create["type"] == "response.create" and "response" not in create
    (context_event,) = to_client(actions)
    assert context_event["type"] == "parley.context" and context_event["status"] == "ok"
    assert [x["source"] for x in context_event["sources"]] == ["policy.md", "faq.md"]
    assert context_event["sources"][0]["snippet"] == "Refunds within 30 days."
    assert context_event["query"] == "what is the refund policy" and context_event["retrieval_ms"] == 1.0

    done = answer(s, 11.5)
    turn_event = to_client(done)[-1]
    assert turn_event["type"] == "parley.turn"
    assert turn_event["timings_ms"] == {
        "transcript": 200.0,
        "retrieval": 350.0,
        "response_created": 500.0,
        "first_audio": 600.0,
    }
    (record,) = [a for a in done if isinstance(a, TurnDone)]
    assert record.provider == "local" and record.timings_ms["first_audio"] == 600.0
    assert not s.busy


def test_turn_without_context_or_with_a_timed_out_hook_just_answers() -> None:
    for context, status, sent in [
        (Context(searched=False), "off", ["response.create"]),
        (Context(), "empty", ["response.create"]),
        (None, "timeout", ["response.create"]),
    ]:
        s = make()
        (fetch,) = [a for a in spoken_turn(s) if isinstance(a, FetchContext)]
        actions = s.on_context(fetch, context, "ok" if context is not None else status, 1.0, 11.6)
        assert [e["type"] for e in to_upstream(actions)] == sent
        (ctx_event,) = to_client(actions)
        assert ctx_event["status"] == status and ctx_event["sources"] == []
        if status == "empty":  # the knowledge base has nothing: decided in code, not left to the model
            assert "do not guess" in to_upstream(actions)[0]["response"]["instructions"]


def test_store_errors_warn_the_client_once_and_answer_without_context() -> None:
    s = make()
    (fetch,) = [a for a in spoken_turn(s) if isinstance(a, FetchContext)]
    actions = s.on_context(fetch, None, "error", 1.0, 11.6)
    assert [e["type"] for e in to_upstream(actions)] == ["response.create"]
    warning, ctx_event = to_client(actions)
    assert warning["type"] == "parley.warning" and warning["code"] == "knowledge_base_unavailable"
    assert ctx_event["status"] == "error"
    answer(s, 11.7)
    (fetch,) = [a for a in spoken_turn(s, t=20.0) if isinstance(a, FetchContext)]
    assert [e["type"] for e in to_client(s.on_context(fetch, None, "error", 1.0, 21.6))] == ["parley.context"]


def test_stale_context_result_is_ignored_after_the_user_speaks_again() -> None:
    s = make()
    (fetch,) = [a for a in spoken_turn(s) if isinstance(a, FetchContext)]
    s.on_upstream_text(ev("input_audio_buffer.speech_started"), 11.3)
    assert s.on_context(fetch, Context(), "ok", 1.0, 11.4) == []


def test_empty_transcript_answers_nothing() -> None:
    s = make()
    assert not [a for a in spoken_turn(s, transcript="  ") if isinstance(a, FetchContext)]


def test_user_text_item_runs_the_same_turn_path_and_folds_the_clients_response_create() -> None:
    s = make()
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hours?"}]}
    frame = ev("conversation.item.create", item=item)
    assert s.on_client_text(frame, 1.0) == [ToUpstream(frame)]
    # the SDK's habit: create the item, then ask for a response. The relay answers once, after context.
    assert s.on_client_text(ev("response.create"), 1.01) == []
    added = ev("conversation.item.added", item={**item, "id": "item_t1"})
    actions = s.on_upstream_text(added, 1.05)
    (fetch,) = [a for a in actions if isinstance(a, FetchContext)]
    assert fetch.query == "hours?"
    # a duplicate confirmation (item.done / item.created) starts nothing
    assert not [a for a in s.on_upstream_text(added, 1.06) if isinstance(a, FetchContext)]
    # the relay's own system item is not a user turn
    sys_item = ev("conversation.item.added", item={"id": "i2", "role": "system", "content": []})
    assert to_client(s.on_upstream_text(sys_item, 1.07))
    assert [e["type"] for e in to_upstream(s.on_context(fetch, None, "ok", 1.0, 1.1))] == ["response.create"]


def test_barge_in_forwards_speech_started_at_once_and_truncate() -> None:
    s = make()  # an upstream that interrupts by itself: no extra cancel
    (fetch,) = [a for a in spoken_turn(s) if isinstance(a, FetchContext)]
    s.on_context(fetch, None, "ok", 1.0, 11.3)
    s.on_upstream_text(ev("response.created", response={"id": "resp_1"}), 11.4)
    started = ev("input_audio_buffer.speech_started", audio_start_ms=3000)
    assert s.on_upstream_text(started, 12.0) == [ToClient(started)]
    truncate = ev("conversation.item.truncate", item_id="item_a1", content_index=0, audio_end_ms=640)
    assert s.on_client_text(truncate, 12.05) == [ToUpstream(truncate)]


def test_barge_in_cancels_for_an_upstream_that_does_not_interrupt_itself() -> None:
    s = make(self_interrupts=False)
    (fetch,) = [a for a in spoken_turn(s) if isinstance(a, FetchContext)]
    s.on_context(fetch, None, "ok", 1.0, 11.3)
    s.on_upstream_text(ev("response.created", response={"id": "resp_1"}), 11.4)
    actions = s.on_upstream_text(ev("input_audio_buffer.speech_started"), 12.0)
    assert to_client(actions)[0]["type"] == "input_audio_buffer.speech_started"
    assert [e["type"] for e in to_upstream(actions)] == ["response.cancel"]
    truncate = ev("conversation.item.truncate", item_id="item_a1", content_index=0, audio_end_ms=640)
    assert [e["type"] for e in to_upstream(s.on_client_text(truncate, 12.05))] == [
        "conversation.item.truncate",
        "response.cancel",
    ]
    # the cancel raced the end of the response: the upstream's harmless complaint never reaches the client
    not_active = ev("error", error={"type": "invalid_request_error", "code": "response_cancel_not_active"})
    assert s.on_upstream_text(not_active, 12.1) == []
    other = ev("error", error={"type": "server_error", "code": "boom", "message": "x"})
    assert s.on_upstream_text(other, 12.2) == [ToClient(other, error_code="boom")]


def test_idle_timeout_and_duration_limit_with_warning() -> None:
    s = make(now=0.0, idle_timeout_s=5.0, max_duration_s=60.0, expiry_warning_s=30.0)
    assert s.next_deadline() == 5.0
    assert s.tick(4.0) == []
    s.on_client_text(append(), 4.0)
    assert s.tick(8.9) == []
    actions = s.tick(9.0)
    err, closed, close = actions
    assert isinstance(close, CloseSession) and (close.code, close.reason) == (1000, "idle_timeout")
    assert json.loads(err.data)["error"]["code"] == "idle_timeout"  # type: ignore[union-attr]
    assert json.loads(closed.data)["status"] == "closed"  # type: ignore[union-attr]

    s = make(now=0.0, idle_timeout_s=0, max_duration_s=60.0, expiry_warning_s=30.0)
    assert s.next_deadline() == 30.0
    (warning,) = to_client(s.tick(30.0))
    assert warning["type"] == "parley.session" and warning["status"] == "expiring"
    assert warning["expires_in_s"] == 30.0
    assert s.tick(45.0) == [] and s.next_deadline() == 60.0
    *_, close = s.tick(60.0)
    assert isinstance(close, CloseSession) and (close.code, close.reason) == (1008, "session_duration_limit")
    assert s.tick(61.0) == []


def test_shutdown_lets_the_answer_finish_and_starts_no_new_turn() -> None:
    s = make()
    (fetch,) = [a for a in spoken_turn(s) if isinstance(a, FetchContext)]
    s.on_context(fetch, None, "ok", 1.0, 11.3)
    s.on_upstream_text(ev("response.created", response={"id": "resp_1"}), 11.4)
    (closing,) = to_client(s.shutdown(11.5))
    assert closing["status"] == "closing" and closing["reason"] == "server_shutdown"
    assert s.busy
    s.on_upstream_text(ev("response.done", response={"id": "resp_1", "status": "completed"}), 12.0)
    assert not s.busy
    assert not [a for a in spoken_turn(s) if isinstance(a, FetchContext)]


def test_upstream_audio_is_forwarded_without_reencoding() -> None:
    s = make()
    delta = '{"type":"response.output_audio.delta","event_id":"e","delta":"' + "A" * 50_000 + '"}'
    assert s.on_upstream_text(delta, 1.0) == [ToClient(delta)]
    other = '{"event_id":"e2","type":"response.output_audio_transcript.delta","delta":"hi"}'
    assert s.on_upstream_text(other, 1.0) == [ToClient(other)]
    lost = s.upstream_lost("the voice provider closed the connection")
    assert to_client(lost)[0]["error"]["code"] == "upstream_unavailable"
    assert isinstance(lost[-1], CloseSession) and lost[-1].code == 1011


def test_hostile_frames_get_an_error_and_the_session_lives_on() -> None:
    s = make()
    nested = "[" * 10_000 + "]" * 10_000
    surrogate = '{"type":"nope","event_id":"\\ud800"}'
    duplicate = '{"type":"session.update","type":"input_audio_buffer.clear"}'
    for frame, code in [(nested, "invalid_json"), (surrogate, "invalid_json"), (duplicate, "invalid_json")]:
        actions = s.on_client_text(frame, 1.0)
        (err,) = to_client(actions)
        assert err["type"] == "error" and err["error"]["code"] == code, err
        assert err["error"]["event_id"] is None  # nothing of the hostile frame is echoed
        assert not to_upstream(actions)
        json.dumps(err).encode("utf-8")  # what goes to the client always encodes
    # a long event_id is not echoed either; the session still forwards good frames
    (err,) = to_client(s.on_client_text(ev("nope", event_id="x" * 500), 1.1))
    assert err["error"]["event_id"] is None and err["error"]["code"] == "event_not_allowed"
    assert to_upstream(s.on_client_text(ev("input_audio_buffer.clear"), 1.2)) == [
        {"type": "input_audio_buffer.clear"}
    ]


def test_what_is_forwarded_is_what_was_checked() -> None:
    s = make()
    spaced = '{ "type" : "input_audio_buffer.clear" ,  "event_id": "e1" }'
    (sent,) = [a for a in s.on_client_text(spaced, 1.0) if isinstance(a, ToUpstream)]
    assert sent.data == '{"type":"input_audio_buffer.clear","event_id":"e1"}'


def test_idle_timeout_never_cuts_an_answer_and_counts_from_its_end() -> None:
    s = make(now=0.0, idle_timeout_s=5.0, max_duration_s=600.0)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a long story"}]}
    s.on_client_text(ev("conversation.item.create", item=item), 1.0)
    (fetch,) = [
        a
        for a in s.on_upstream_text(ev("conversation.item.added", item={**item, "id": "i1"}), 1.1)
        if isinstance(a, FetchContext)
    ]
    s.on_context(fetch, None, "timeout", 150.0, 1.3)
    s.on_upstream_text(ev("response.created", response={"id": "r1"}), 1.4)
    assert s.tick(30.0) == []  # 29 s of answer, no client input: not idle
    s.on_upstream_text(ev("response.done", response={"id": "r1", "status": "completed"}), 40.0)
    assert s.tick(44.9) == []
    *_, close = s.tick(45.0)
    assert isinstance(close, CloseSession) and close.reason == "idle_timeout"


def test_audio_appends_take_the_fast_path_only_when_it_is_safe() -> None:
    from parley.relay import wire

    plain = '{"type":"input_audio_buffer.append","event_id":"e1","audio":"QUJD"}'
    assert wire.parse_client_frame(plain)[1] == plain
    for audio in ['QU"JD', "QU\\\\JD", "Q\\nD", "é"]:  # anything escaped goes through the general path
        frame = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
        assert json.loads(wire.parse_client_frame(frame)[1])["audio"] == audio
    extra = '{"type":"input_audio_buffer.append","audio":"QUJD","session":{"type":"realtime"}}'
    assert json.loads(wire.parse_client_frame(extra)[1])["session"] == {"type": "realtime"}


# --- upstream failover (the runtime reconnects; the session fails the turn, configures and replays) ------------


def test_failover_fails_the_answer_in_flight_then_replays_what_was_heard_into_the_new_upstream() -> None:
    from parley.relay.actions import UpstreamMoved

    s = make()
    s.on_upstream_text(
        ev("conversation.item.input_audio_transcription.completed", item_id="u1", transcript="hi"), 101
    )
    s.on_upstream_text(ev("response.created", response={"id": "r1"}), 101.1)
    s.on_upstream_text(ev("response.output_audio_transcript.delta", item_id="a1", delta="hello there"), 101.2)
    lost = s.upstream_lost("dropped", 102.0, moving=True)
    done, err = to_client(lost)
    assert done["type"] == "response.done" and done["response"]["status"] == "failed"
    assert err["error"]["code"] == "upstream_lost" and not s.closed and not s.response_active
    local = UpstreamSessionConfig(instructions="Be brief.", voice="")
    update, user, assistant = to_upstream(s.upstream_moved("local", local, self_interrupts=True))
    assert update["type"] == "session.update" and "voice" not in update["session"]["audio"]["output"]
    assert (user["item"]["role"], user["item"]["content"][0]["text"]) == ("user", "hi")
    assert (assistant["item"]["role"], assistant["item"]["content"][0]["text"]) == (
        "assistant",
        "hello there",
    )
    # the new upstream's acknowledgements of the replayed items are not the client's business
    assert s.on_upstream_text(ev("conversation.item.added", item=user["item"]), 102.1) == []
    ready = s.on_upstream_text(ev("session.updated", session={}), 102.25)
    (notice,) = to_client(ready)
    assert notice["status"] == "moved" and notice["provider"] == "local" and notice["gap_ms"] == 250.0
    assert [a for a in ready if isinstance(a, UpstreamMoved)] == [UpstreamMoved("local", "local", 0.25)]
    again = to_client(s.on_upstream_text(ev("session.updated", session={}), 103))
    assert [e["type"] for e in again] == ["session.updated"]  # unasked-for: shown, but moved only once


def test_a_system_message_is_the_clients_only_when_the_policy_lets_it_set_instructions() -> None:
    item = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be terse."}]}
    frame = ev("conversation.item.create", item=item)
    assert to_upstream(make().on_client_text(frame, 101.0)) == [json.loads(frame)]  # Pipecat sends these
    locked = make(policy=Policy(fields=("audio.output.voice",)))
    (err,) = to_client(locked.on_client_text(frame, 101.0))
    assert err["error"]["code"] == "event_not_allowed" and not to_upstream(
        locked.on_client_text(frame, 101.0)
    )
