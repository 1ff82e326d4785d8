"""The record of what was said and heard, and the events that replay it into a new upstream (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

from parley.realtime import server_events
from parley.relay.replay import (
    REPLAY_PREFIX,
    HeardLog,
    audio_ms_of_delta,
    owns,
    owns_event,
    replay_events,
    response_failed,
)


def delta_frame(ms: int) -> str:
    audio = base64.b64encode(b"\0" * 48 * ms).decode()
    return json.dumps(
        server_events.output_audio_delta("resp_1", "item_1", 0, 0, audio), separators=(",", ":")
    )


def test_audio_length_is_read_from_the_frame_without_parsing_it() -> None:
    assert audio_ms_of_delta(delta_frame(100)) == 100
    assert audio_ms_of_delta(delta_frame(20)) == 20
    # delta not last: counted as nothing (the answer is then kept whole)
    assert audio_ms_of_delta('{"type":"response.output_audio.delta","delta":"AAAA","item_id":"i"}') == 0
    assert audio_ms_of_delta("not json") == 0


def answered(log: HeardLog, words: str, *, item_id: str = "item_a", audio_ms: float = 1000.0) -> None:
    log.answer_started("resp_1")
    log.on_answer_event({"type": "response.output_item.added", "item": {"id": item_id, "role": "assistant"}})
    for word in words.split():
        log.on_answer_event(
            {"type": "response.output_audio_transcript.delta", "item_id": item_id, "delta": word + " "}
        )
    log.answer_audio(audio_ms)
    log.answer_ended()


def test_user_turns_and_answers_in_order() -> None:
    log = HeardLog()
    log.user("what are the opening hours", "item_u1")
    answered(log, "nine to five")
    log.user("  and on sunday? ")
    log.user("   ")  # nothing said: not recorded
    assert log.heard() == [
        ("user", "what are the opening hours"),
        ("assistant", "nine to five"),
        ("user", "and on sunday?"),
    ]


def test_an_interrupted_answer_keeps_only_what_was_heard() -> None:
    log = HeardLog()
    log.user("tell me a story")
    answered(log, "once upon a time there were ten little brown hens", audio_ms=2000)
    log.truncated("item_a", 1000)  # half the audio played: half the words
    assert log.heard()[-1] == ("assistant", "once upon a time there")
    log.truncated("item_a", 0)  # nothing heard: the answer is left out
    assert log.heard() == [("user", "tell me a story")]


def test_the_done_text_replaces_the_deltas_and_an_unknown_item_truncates_the_latest_answer() -> None:
    log = HeardLog()
    log.answer_started("resp_1")
    log.on_answer_event({"type": "response.output_text.delta", "delta": "Hel"})
    log.on_answer_event({"type": "response.output_text.done", "text": "Hello there"})
    log.answer_audio(400)
    log.truncated("item_unknown", 200)
    assert log.heard() == [("assistant", "Hello")]


def test_bounded_newest_kept() -> None:
    log = HeardLog(max_items=3, max_chars=12)
    for n in range(5):
        log.user(f"question {n}")  # 10 chars each
    assert log.heard() == [("user", "question 4")]  # 3 items kept, and of those only what fits in 12 chars
    assert HeardLog(max_items=3).heard() == []


def test_replay_events_are_text_items_the_relay_recognises() -> None:
    events: list[dict[str, Any]] = [
        json.loads(e) for e in replay_events([("user", "hello"), ("assistant", "hi, how can I help?")])
    ]
    assert [e["type"] for e in events] == ["conversation.item.create"] * 2
    user, assistant = (e["item"] for e in events)
    assert user["role"] == "user" and user["content"] == [{"type": "input_text", "text": "hello"}]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [{"type": "output_text", "text": "hi, how can I help?"}]
    assert user["id"].startswith(REPLAY_PREFIX) and user["id"] != assistant["id"]
    assert all(owns(e["item"]["id"]) and owns_event(e["event_id"]) for e in events)
    assert not owns("item_abc") and not owns_event("event_abc")


def test_a_failed_response_done() -> None:
    done = json.loads(response_failed("resp_9", "upstream_lost"))
    assert done["type"] == "response.done" and done["response"]["id"] == "resp_9"
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["code"] == "upstream_lost"
