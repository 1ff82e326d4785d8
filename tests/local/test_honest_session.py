"""Honest sessions with fake engines: what the session object echoes is what the server does; fields it does not
implement are refused; ``idle_timeout_ms``, ``audio.output.speed`` and token ``usage`` are real.

The idle timeout runs on the input-audio clock (``parley.local.idle``), so the tests append silence instead of
waiting: nothing here sleeps."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from session_fakes import ScriptedLLM, fake_engines, running, silence, speech

from parley.local.engines import LLMEnd
from parley.local.idle import IdleTimer
from parley.local.responses import IDLE_NOTE
from parley.realtime.audio import BYTES_PER_MS


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        (
            {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}},
            "session.audio.input.turn_detection.type",
        ),
        (
            {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}},
            "session.audio.input.noise_reduction",
        ),
        ({"prompt": {"id": "pmpt_1"}}, "session.prompt"),
        ({"include": ["item.input_audio_transcription.logprobs"]}, "session.include"),
        ({"truncation": {"type": "retention_ratio", "retention_ratio": 0.5}}, "session.truncation"),
    ],
)
async def test_unimplemented_fields_are_refused_and_the_update_is_not_applied(
    patch: dict[str, Any], param: str
) -> None:
    async with running() as h:
        event = {
            "type": "session.update",
            "event_id": "u1",
            "session": {"type": "realtime", "instructions": "X", **patch},
        }
        await h.send(event)
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", param, "u1")
        assert "not supported" in err["message"] or "never truncates" in err["message"]
        s = (await h.update())["session"]
        assert s["instructions"] != "X"  # the whole update was refused
        assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"


async def test_echoes_say_what_applies() -> None:
    async with running() as h:
        s = (
            await h.update(
                tracing="auto",
                truncation="auto",
                audio={
                    "input": {
                        "noise_reduction": None,
                        "transcription": {"model": "gpt-4o-transcribe", "language": "fr"},
                    },
                    "output": {"speed": 1.25},
                },
            )
        )["session"]
        assert s["audio"]["input"]["transcription"] == {"model": "fake-stt", "language": "fr", "prompt": None}
        assert s["audio"]["input"]["noise_reduction"] is None
        assert (s["tracing"], s["truncation"]) == (None, "disabled")
        assert s["audio"]["output"]["speed"] == 1.25
        await h.send(
            {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"speed": 2.0}}}}
        )
        assert (await h.expect("error"))["error"][
            "param"
        ] == "session.audio.output.speed"  # GA bounds 0.25-1.5


def _audio_ms(events: list[dict[str, Any]]) -> int:
    return sum(
        len(base64.b64decode(e["delta"])) for e in events if e["type"] == "response.output_audio.delta"
    ) // (BYTES_PER_MS)


async def test_speed_reaches_the_voice() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await h.send({"type": "response.create"})
        normal = _audio_ms(await h.collect_until("response.done"))
        await h.update(audio={"output": {"speed": 1.5}})
        await h.send({"type": "response.create"})
        fast = _audio_ms(await h.collect_until("response.done"))
    assert engines.tts.speeds[-1] == 1.5  # type: ignore[attr-defined]
    assert fast == pytest.approx(normal / 1.5, rel=0.05)


async def test_usage_is_the_llm_servers_and_unknown_counts_are_null() -> None:
    engines = fake_engines()
    llm = ScriptedLLM(["Hi ", "there.", LLMEnd("stop", input_tokens=57, output_tokens=3, cached_tokens=40)])
    engines.llm = llm
    async with running(engines) as h:
        await h.send({"type": "response.create"})
        usage = (await h.expect("response.done"))["response"]["usage"]
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (57, 3, 60)
        assert usage["input_token_details"]["cached_tokens"] == 40
        llm.deltas = ["Hi ", "there."]  # a server that reports no usage (llama-cpp-python's)
        await h.send({"type": "response.create"})
        usage = (await h.expect("response.done"))["response"]["usage"]
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (None, 2, None)


# --- idle timeout ---------------------------------------------------------------------------------------------


def test_idle_timer_counts_from_the_end_of_playback() -> None:
    ms = BYTES_PER_MS
    t = IdleTimer()
    assert t.due(10_000 * ms, 1000) is None  # no answer yet
    t.audio_started(1000 * ms)
    t.answer_ended(1200 * ms, audio_ms=3000)  # plays until 4000 ms
    assert t.due(4999 * ms, 1000) is None
    assert t.due(5000 * ms, 1000) == 4000 * ms
    assert t.due(5000 * ms, None) is None
    t.stop()
    assert t.due(99_000 * ms, 1000) is None
    t.answer_ended(7000 * ms, audio_ms=0)  # a text answer: from its end
    assert t.due(8000 * ms, 1000) == 7000 * ms


async def test_idle_timeout_commits_the_silence_and_answers() -> None:
    engines = fake_engines()
    llm = engines.llm
    assert isinstance(llm, ScriptedLLM)
    async with running(engines) as h:
        await h.update(audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 2000}}})
        await h.append(silence(5000))  # no answer yet: nothing to time out from
        assert not [e for e in await h.settle() if e["type"] == "input_audio_buffer.timeout_triggered"]
        await h.append(speech(500) + silence(700))
        done = (await h.expect("response.done"))["response"]
        answer_ms = done["output"][0]["content"][0]["transcript"].count(" ") * 100 + 100
        stopped_at = next(e for e in h.seen if e["type"] == "input_audio_buffer.speech_stopped")[
            "audio_end_ms"
        ]
        # The answer was made while the input stood at about 6700 ms; it plays for answer_ms from then.
        engines.stt.text = ""  # type: ignore[attr-defined]  # Whisper hears nothing in silence
        await h.append(silence(answer_ms + 1900))
        assert not [e for e in await h.settle() if e["type"] == "input_audio_buffer.timeout_triggered"]
        await h.append(silence(200))
        fired = await h.expect("input_audio_buffer.timeout_triggered")
        assert fired["audio_end_ms"] - fired["audio_start_ms"] >= 2000
        assert fired["audio_start_ms"] >= stopped_at + answer_ms
        committed = await h.expect("input_audio_buffer.committed")
        assert committed["item_id"] == fired["item_id"]
        await h.expect("response.done")
        assert IDLE_NOTE in llm.calls[-1][0]["content"]  # the silence itself has no words
        assert llm.calls[-1][-1]["role"] == "assistant"
        # Speech resets the count: a turn within the timeout gets no timeout.
        engines.stt.text = "And Spain?"  # type: ignore[attr-defined]
        await h.append(silence(1000) + speech(500) + silence(700))
        await h.expect("response.done")
        assert not [e for e in await h.settle() if e["type"] == "input_audio_buffer.timeout_triggered"]
