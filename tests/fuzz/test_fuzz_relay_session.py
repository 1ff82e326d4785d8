"""Property-based fuzzing of the pure relay session (``RelaySession``): hostile client frames, alone and
interleaved with upstream events, context results and the clock.

Properties, for every client frame: no exception escapes; the session is not closed by it; it is either refused
with exactly one protocol ``error`` (GA shape, echoing the frame's ``event_id`` only when that is a short string)
and nothing goes upstream, or it is forwarded as the event the relay checked (strict JSON, re-serialised,
allowlisted type) and no error is written; frames labelled ``refuse`` are refused, ``forward`` forwarded. Every
frame the session writes, to either side, is strict JSON that encodes to UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzz_checks import FUZZ, FUZZ_SLOW, check_error_event, sendable, strict_loads
from fuzz_frames import RELAY_ALLOWED, DataPicker, Frame, Picker, frame
from hypothesis import event as tally
from hypothesis import given
from hypothesis import strategies as st

from parley.relay.actions import FetchContext, ToClient, ToUpstream
from parley.relay.context import Context
from parley.relay.session import RelaySession, SessionConfig
from parley.relay.wire import UpstreamSessionConfig

LIMIT = 65_536


def make_session(*, self_interrupts: bool = True) -> RelaySession:
    """A session whose upstream has answered the relay's first ``session.update``: the client has had its
    ``session.created``, so nothing the session writes for it is held back any more."""
    cfg = SessionConfig(
        session_id="sess_fuzz",
        provider="local",
        upstream=UpstreamSessionConfig(instructions="Be brief.", voice="marin"),
        self_interrupts=self_interrupts,
        max_frame_bytes=LIMIT,
        idle_timeout_s=1e9,
        max_duration_s=1e9,
    )
    session = RelaySession(cfg, now=0.0)
    session.start(0.0)
    session.on_upstream_text('{"type":"session.created","session":{"type":"realtime"}}', 0.0)
    opened = session.on_upstream_text('{"type":"session.updated","session":{"type":"realtime"}}', 0.0)
    assert [json.loads(a.data)["type"] for a in opened if isinstance(a, ToClient)] == ["session.created"]
    return session


def client_text(f: Frame) -> str | None:
    if isinstance(f.data, str):
        return f.data
    try:
        return f.data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def feed(session: RelaySession, f: Frame, now: float) -> list[Any]:
    if isinstance(f.data, bytes):
        return session.on_client_bytes(f.data, now)
    return session.on_client_text(f.data, now)


# The relay may rewrite these (a session.update to what its policy lets through, a response.create's
# parameters), so what it forwards of them is not the client's frame verbatim.
REWRITTEN = ("session.update", "response.create")


def check_client_frame(session: RelaySession, f: Frame, actions: list[Any]) -> None:
    assert all(isinstance(a, ToClient | ToUpstream) for a in actions), actions
    to_client = [sendable(a.data) for a in actions if isinstance(a, ToClient)]
    to_upstream = [a.data for a in actions if isinstance(a, ToUpstream)]
    for data in to_upstream:
        sendable(data)
    assert not session.closed, f"closed by {f.category}"
    assert len(to_client) <= 1, f"{f.category}: {to_client}"
    text = client_text(f)
    sent = json.loads(text) if to_upstream else None  # forwarded: it parsed
    if to_client:
        err = check_error_event(to_client[0])
        assert f.relay != "forward", f"{f.category} refused: {err}"
        if err["event_id"] is not None:
            assert text is not None and len(err["event_id"]) <= 64
            assert json.loads(text)["event_id"] == err["event_id"]
        if to_upstream:  # refused in part: only a session.update, and never as the client sent it
            assert sent["type"] == "session.update", f"{f.category}: refused and forwarded"
            (forwarded,) = [strict_loads(d) for d in to_upstream]
            assert forwarded["type"] == "session.update" and forwarded.get("session") != sent.get("session")
        return
    assert f.relay != "refuse", f"{f.category} was not refused: {to_upstream}"
    if not to_upstream:
        assert f.relay_fold, f"{f.category}: neither refused nor forwarded"
        return
    forwarded = strict_loads(to_upstream[0])
    assert forwarded["type"] == sent["type"] and forwarded["type"] in RELAY_ALLOWED
    if sent["type"] not in REWRITTEN:
        assert forwarded == sent, "what goes upstream differs from what the client sent"
    for extra in to_upstream[1:]:  # the relay's own cancel after a truncate
        assert strict_loads(extra)["type"] == "response.cancel"


# --- client frames alone ----------------------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_any_client_frame_is_refused_once_or_forwarded_as_checked(data: st.DataObject) -> None:
    pick = DataPicker(data)
    session = make_session(self_interrupts=data.draw(st.booleans()))
    for i in range(data.draw(st.integers(1, 4))):
        f = frame(pick, LIMIT, raw=True)
        tally(f.category)
        check_client_frame(session, f, feed(session, f, float(i)))


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_and_bytes_never_escape(blob: str | bytes) -> None:
    session = make_session()
    actions = (
        session.on_client_bytes(blob, 1.0) if isinstance(blob, bytes) else session.on_client_text(blob, 1.0)
    )
    f = Frame(blob, "arbitrary", "any", "any")
    check_client_frame(session, f, actions)


# --- interleaved with the upstream, context results and the clock ------------------------------------------------


def upstream_event(pick: Picker, item: str) -> dict[str, Any]:
    """A well-formed upstream event (any order: the fuzz decides), with fuzzed text and ids."""
    words = pick.text(30)
    choices: list[dict[str, Any]] = [
        {"type": "session.updated", "session": {"type": "realtime"}},
        {"type": "input_audio_buffer.speech_started", "item_id": item, "audio_start_ms": 0},
        {"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": 900},
        {"type": "input_audio_buffer.committed", "item_id": item},
        {"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "delta": words},
        {"type": "parley.pause_transcript", "item_id": item, "text": words},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "transcript": words,
        },
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": item, "error": {}},
        {
            "type": "conversation.item.added",
            "item": {
                "id": item,
                "type": "message",
                "role": pick.choice(("user", "assistant", "system")),
                "content": [{"type": "input_text", "text": words}],
            },
        },
        {"type": "conversation.item.done", "item": {"id": pick.choice((item, "parley_ctx_1"))}},
        {"type": "conversation.item.deleted", "item_id": pick.choice((item, "parley_ctx_1"))},
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_audio.delta", "response_id": "resp_1", "delta": "AAAA"},
        {
            "type": "response.done",
            "response": {"id": "resp_1", "status": pick.choice(("completed", "cancelled"))},
        },
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": words,
                "code": pick.choice(("response_cancel_not_active", "x", None)),
                "event_id": pick.choice((None, "parley_ctx_evt_1", "event_1")),
            },
        },
        {"type": "response.output_text.delta", "delta": words},
    ]
    return pick.choice(choices)


@FUZZ_SLOW
@given(st.data())
def test_client_frames_interleaved_with_upstream_events(data: st.DataObject) -> None:
    pick = DataPicker(data)
    session = make_session(self_interrupts=data.draw(st.booleans()))
    now = 0.0
    pending: list[FetchContext] = []
    item = "item_u1"
    for _ in range(data.draw(st.integers(5, 40))):
        now += data.draw(st.sampled_from((0.0, 0.01, 0.2)))
        step = data.draw(st.sampled_from(("client", "client", "upstream", "upstream", "context", "tick")))
        if step == "client":
            f = frame(pick, LIMIT, raw=True)
            tally(f.category)
            check_client_frame(session, f, feed(session, f, now))
            continue
        if step == "upstream":
            if pick.integer(0, 5) == 0:
                item = f"item_u{pick.integer(2, 9)}"
            actions = session.on_upstream_text(
                json.dumps(upstream_event(pick, item), ensure_ascii=False), now
            )
        elif step == "context" and pending:
            req = pending.pop(pick.integer(0, len(pending) - 1))
            status = pick.choice(("ok", "timeout", "error"))
            ctx = Context(passages=[], searched=True) if status == "ok" else None
            actions = session.on_context(req, ctx, status, 3.0, now)
        else:
            actions = session.tick(now)
        for a in actions:
            if isinstance(a, ToClient | ToUpstream):
                sendable(a.data)
            elif isinstance(a, FetchContext):
                pending.append(a)
        assert not session.closed


# --- crashes this suite found in relay/session.py, fixed: regressions -------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"role": "user", "content": 5},
        {"role": "user", "content": [{"type": "input_text", "text": 5}]},
    ],
)
def test_upstream_item_with_wrong_content_types_does_not_raise(item: dict[str, Any]) -> None:
    session = make_session()
    user_text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    session.on_client_text(json.dumps({"type": "conversation.item.create", "item": user_text}), 1.0)
    session.on_upstream_text(json.dumps({"type": "conversation.item.added", "item": item}), 2.0)


def test_deeply_nested_upstream_frame_does_not_raise() -> None:
    session = make_session()
    session.on_upstream_text('{"type":"error","x":' + "[" * 100_000 + "]" * 100_000 + "}", 1.0)


def test_frame_over_the_byte_limit_in_multibyte_characters_is_refused() -> None:
    session = make_session()
    text = '{"type":"input_audio_buffer.append","audio":"' + "é" * (LIMIT - 100) + '"}'
    assert len(text) <= LIMIT < len(text.encode("utf-8"))
    (action,) = session.on_client_text(text, 1.0)
    assert isinstance(action, ToClient) and json.loads(action.data)["error"]["code"] == "frame_too_large"
