"""In-process tests of the local voice session with fake engines: protocol, turns, barge-in, truncation, errors."""

from __future__ import annotations

from typing import Any

from session_fakes import Harness, ScriptedLLM, b64, fake_engines, running, silence, speech

from parley.local.conversation import Segment, heard_text

AUDIO_ENVELOPE = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "parley.timing",
    "response.done",
]


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e["type"] or not e["type"].endswith(".delta"):
            out.append(e["type"])
    return out


def _dedup(kinds: list[str]) -> list[str]:
    seen: list[str] = []
    for k in kinds:
        if k not in seen:
            seen.append(k)
    return seen


async def _manual_turn(h: Harness) -> str:
    await h.update(audio={"input": {"turn_detection": None}})
    await h.append(speech(500))
    await h.send({"type": "input_audio_buffer.commit"})
    committed = await h.expect("input_audio_buffer.committed")
    await h.expect("conversation.item.input_audio_transcription.completed")
    return committed["item_id"]


# --- session -------------------------------------------------------------------------------------------------------


async def test_session_created_defaults_and_update_merge() -> None:
    async with running() as h:
        created = h.seen[0]["session"]
        td = created["audio"]["input"]["turn_detection"]
        assert td == {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
            "idle_timeout_ms": None,
        }
        assert created["output_modalities"] == ["audio"]
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}

        s = (
            await h.update(
                instructions="Be brief.",
                audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}},
            )
        )["session"]
        assert s["instructions"] == "Be brief."
        assert s["audio"]["input"]["turn_detection"]["threshold"] == 0.7
        assert s["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500  # kept
        s = (
            await h.update(
                audio={
                    "input": {"transcription": {"model": "whisper-1", "language": "de"}},
                    "output": {"voice": "alloy"},
                }
            )
        )["session"]
        assert s["audio"]["input"]["transcription"]["language"] == "de"
        assert s["instructions"] == "Be brief."  # absent = unchanged
        assert s["audio"]["input"]["transcription"]["model"] == "fake-stt"  # the model that transcribes
        s = (
            await h.update(
                audio={"input": {"turn_detection": None}}, output_modalities=["text"], max_output_tokens=50
            )
        )["session"]
        assert s["audio"]["input"]["turn_detection"] is None
        assert s["output_modalities"] == ["text"] and s["max_output_tokens"] == 50


async def test_session_update_rejects_bad_values_and_keeps_config() -> None:
    async with running() as h:
        bad: list[tuple[dict[str, Any], str]] = [
            (
                {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
                "session.audio.input.turn_detection.threshold",
            ),
            ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "session.audio.input.format.type"),
            ({"output_modalities": ["text", "audio"]}, "session.output_modalities"),
            ({"audio": {"output": {"voice": "nobody"}}}, "session.audio.output.voice"),
            ({"max_output_tokens": 0}, "session.max_output_tokens"),
        ]
        for n, (patch, param) in enumerate(bad):
            await h.send(
                {"type": "session.update", "event_id": f"ev{n}", "session": {"type": "realtime", **patch}}
            )
            err = (await h.expect("error"))["error"]
            assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", param, f"ev{n}"), err
        s = (await h.update())["session"]
        assert s["audio"]["input"]["turn_detection"]["threshold"] == 0.5


async def test_bad_frames_get_errors_and_the_session_lives() -> None:
    async with running(max_event_bytes=30_000, max_append_audio_ms=200) as h:
        await h.send("{not json")
        assert (await h.expect("error"))["error"]["code"] == "invalid_json"
        await h.send({"type": "no.such.event", "event_id": "e1"})
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["event_id"]) == ("unknown_event", "e1")
        await h.send(
            {"type": "conversation.item.truncate", "event_id": "e2", "item_id": "x", "content_index": 0}
        )
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "audio_end_ms", "e2")
        await h.send({"type": "input_audio_buffer.append", "audio": "x" * 40_000})
        assert (await h.expect("error"))["error"]["code"] == "event_too_large"
        await h.send({"type": "input_audio_buffer.append", "audio": b64(silence(300)), "event_id": "e3"})
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["event_id"]) == ("audio_too_large", "e3")
        await h.send({"type": "input_audio_buffer.append", "audio": "%%%"})
        assert (await h.expect("error"))["error"]["param"] == "audio"
        await h.send({"type": "output_audio_buffer.clear"})
        assert (await h.expect("error"))["error"]["code"] == "unsupported_event"
        await h.update(instructions="still here")


# --- input buffer ---------------------------------------------------------------------------------------------------


async def test_manual_commit_clear_and_commit_empty() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await h.update(audio={"input": {"turn_detection": None}})
        await h.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["event_id"]) == ("input_audio_buffer_commit_empty", "c1")
        await h.append(speech(300))
        await h.send({"type": "input_audio_buffer.clear"})
        await h.expect("input_audio_buffer.cleared")
        await h.send({"type": "input_audio_buffer.commit"})
        assert (await h.expect("error"))["error"]["code"] == "input_audio_buffer_commit_empty"

        await h.append(speech(400))
        await h.send({"type": "input_audio_buffer.commit"})
        committed = await h.expect("input_audio_buffer.committed")
        added = await h.expect("conversation.item.added")
        assert added["item"]["id"] == committed["item_id"]
        assert added["item"]["content"][0] == {"type": "input_audio", "transcript": None}
        done = await h.expect("conversation.item.input_audio_transcription.completed")
        assert done["transcript"] == "What is the capital of France?"
        item = (await h.expect("conversation.item.done"))["item"]
        assert item["content"][0]["transcript"] == "What is the capital of France?"
        # Manual: no automatic answer (it would have started when the transcript came in).
        assert not [e for e in await h.settle() if e["type"].startswith("response.")]
        assert h.session.protocol.response is None


async def test_manual_mode_buffer_cap() -> None:
    async with running(max_buffer_audio_s=1, max_append_audio_ms=1000) as h:
        await h.update(audio={"input": {"turn_detection": None}})
        await h.append(speech(900), chunk_ms=900)
        await h.append(speech(200), chunk_ms=200)
        assert (await h.expect("error"))["error"]["code"] == "input_audio_buffer_full"


# --- turns and responses --------------------------------------------------------------------------------------------


async def test_vad_turn_full_audio_envelope() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await h.append(silence(300) + speech(800) + silence(700))
        started = await h.expect("input_audio_buffer.speech_started")
        stopped = await h.expect("input_audio_buffer.speech_stopped")
        assert started["item_id"] == stopped["item_id"]
        assert started["audio_start_ms"] == 0 and stopped["audio_end_ms"] == 1100
        committed = await h.expect("input_audio_buffer.committed")
        assert committed["item_id"] == started["item_id"]
        await h.expect("conversation.item.input_audio_transcription.completed")
        events = await h.collect_until("response.done")
        start = next(n for n, e in enumerate(events) if e["type"] == "response.created")
        kinds = _dedup(_kinds(events[start:]))
        assert kinds == AUDIO_ENVELOPE, kinds
        done = events[-1]["response"]
        assert done["status"] == "completed" and done["status_details"] is None
        transcript = "".join(
            e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
        )
        final = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert transcript == final == "Hello there, my friend. This is a test."
        assert done["output"][0]["content"][0]["transcript"] == final
        audio_ms = (
            sum(len(e["delta"]) * 3 // 4 for e in events if e["type"] == "response.output_audio.delta") // 48
        )
        assert audio_ms == 100 * len(final.split())
        messages = engines.llm.calls[0]  # type: ignore[attr-defined]
        assert messages[0]["role"] == "system"
        assert messages[-1] == {"role": "user", "content": "What is the capital of France?"}
        timing = next(e for e in events if e["type"] == "parley.timing")
        assert timing["first_audio_ms"] >= timing["llm_first_token_ms"] >= 0


async def test_text_only_mode() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await h.update(output_modalities=["text"])
        await h.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hi"}],
                },
            }
        )
        await h.expect("conversation.item.done")
        await h.send({"type": "response.create"})
        events = await h.collect_until("response.done")
        kinds = set(_kinds(events))
        assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
        assert not any("audio" in k for k in kinds)
        text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
        assert text == "Hello there, my friend. This is a test."
        assert events[-1]["response"]["output"][0]["content"][0] == {"type": "output_text", "text": text}
        assert engines.tts.spoken == []  # type: ignore[attr-defined]


async def test_response_create_overrides_and_max_output_tokens() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await h.send(
            {
                "type": "response.create",
                "response": {
                    "instructions": "Only French.",
                    "output_modalities": ["text"],
                    "max_output_tokens": 2,
                },
            }
        )
        done = (await h.expect("response.done"))["response"]
        assert done["status"] == "incomplete"
        assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
        assert engines.llm.calls[0][0] == {"role": "system", "content": "Only French.\n\nAnswer in English."}  # type: ignore[attr-defined]
        assert engines.llm.max_tokens == [2]  # type: ignore[attr-defined]


async def test_barge_in_cancels_at_once_and_stops_llm_and_tts() -> None:
    engines = fake_engines()
    llm = ScriptedLLM([f"word{n} is here. " for n in range(200)], delay_s=0.02)
    engines.llm = llm
    async with running(engines) as h:
        await h.append(speech(600) + silence(600))
        first = await h.expect("response.output_audio.delta")
        await h.append(speech(200))  # the user talks over the answer
        await h.expect("input_audio_buffer.speech_started")
        done = (await h.expect("response.done", wait_s=2))["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["id"] == first["response_id"]
        assert llm.closed == 1 and llm.yielded < 200
        yielded = llm.yielded
        assert not [e for e in await h.settle() if e.get("response_id") == done["id"]]
        assert (
            llm.yielded == yielded and h.session.protocol.response is None and not h.session.generations
        )  # nothing runs on


async def test_response_cancel_and_errors() -> None:
    engines = fake_engines()
    engines.llm = ScriptedLLM([f"w{n}. " for n in range(100)], delay_s=0.02)
    async with running(engines) as h:
        await h.send({"type": "response.cancel", "event_id": "x1"})
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["event_id"]) == ("response_cancel_not_active", "x1")
        await h.send({"type": "response.create"})
        await h.expect("response.created")
        await h.send({"type": "response.create", "event_id": "x2"})
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["event_id"]) == ("conversation_already_has_active_response", "x2")
        await h.send({"type": "response.cancel"})
        done = (await h.expect("response.done"))["response"]
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        await h.send({"type": "response.create"})  # free again
        await h.expect("response.created")


async def test_truncate_keeps_heard_text_and_rejects_beyond_audio() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await h.send({"type": "response.create"})
        done = (await h.expect("response.done"))["response"]
        item_id = done["output"][0]["id"]
        await h.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 99_999,
                "event_id": "t1",
            }
        )
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "audio_end_ms", "t1")
        # 100 ms per word: 300 ms heard = three words, whatever the phrase cuts
        await h.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 300,
            }
        )
        t = await h.expect("conversation.item.truncated")
        assert (t["item_id"], t["audio_end_ms"], t["content_index"]) == (item_id, 300, 0)
        await h.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item = (await h.expect("conversation.item.retrieved"))["item"]
        assert item["content"][0]["transcript"] == "Hello there, my"
        await h.send({"type": "response.create"})
        await h.expect("response.done")
        assert {"role": "assistant", "content": "Hello there, my"} in engines.llm.calls[1]  # type: ignore[attr-defined]


def test_heard_text_proportional() -> None:
    segs = [Segment(0, 1000, "one two three four"), Segment(1000, 1500, "five six")]
    assert heard_text(segs, 0) == ""
    assert heard_text(segs, 500) == "one two"
    assert heard_text(segs, 1000) == "one two three four"
    assert heard_text(segs, 1250) == "one two three four five"
    assert heard_text(segs, 1500) == "one two three four five six"


async def test_item_create_delete_retrieve_with_previous_item_id() -> None:
    engines = fake_engines()
    async with running(engines) as h:

        def msg(role: str, text: str, **kw: Any) -> dict[str, Any]:
            kind = "input_text" if role != "assistant" else "output_text"
            return {
                "type": "conversation.item.create",
                **kw,
                "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
            }

        await h.send(msg("user", "first"))
        a = await h.expect("conversation.item.added")
        assert a["previous_item_id"] is None
        await h.send(msg("user", "third"))
        c = await h.expect("conversation.item.added")
        assert c["previous_item_id"] == a["item"]["id"]
        await h.send(msg("system", "second (context)", previous_item_id=a["item"]["id"]))
        b = await h.expect("conversation.item.added")
        assert b["previous_item_id"] == a["item"]["id"]
        await h.send(msg("assistant", "zeroth", previous_item_id="root"))
        z = await h.expect("conversation.item.added")
        assert z["previous_item_id"] is None
        await h.send(msg("user", "nowhere", previous_item_id="item_missing", event_id="p1"))
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["param"], err["event_id"]) == ("item_not_found", "previous_item_id", "p1")
        await h.send({"type": "conversation.item.create", "item": {"type": "function_call", "name": "f"}})
        assert (await h.expect("error"))["error"]["code"] == "invalid_value"

        await h.send({"type": "conversation.item.retrieve", "item_id": b["item"]["id"]})
        got = (await h.expect("conversation.item.retrieved"))["item"]
        assert got["role"] == "system" and got["content"][0]["text"] == "second (context)"
        await h.send({"type": "conversation.item.delete", "item_id": c["item"]["id"]})
        assert (await h.expect("conversation.item.deleted"))["item_id"] == c["item"]["id"]
        await h.send({"type": "conversation.item.retrieve", "item_id": c["item"]["id"]})
        assert (await h.expect("error"))["error"]["code"] == "item_not_found"

        await h.send({"type": "response.create"})
        await h.expect("response.done")
        convo = [(m["role"], m["content"]) for m in engines.llm.calls[0][1:]]  # type: ignore[attr-defined]
        assert convo == [("assistant", "zeroth"), ("user", "first"), ("system", "second (context)")]
