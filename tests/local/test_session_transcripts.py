"""A local session with fake engines: failures of a dependency, and transcription of the speech in progress."""

from __future__ import annotations

import asyncio

from session_fakes import fake_engines, running, silence, speech

# --- failures -------------------------------------------------------------------------------------------------------


async def test_llm_down_fails_the_response_then_recovers() -> None:
    engines = fake_engines()
    engines.llm.down = True  # type: ignore[attr-defined]
    async with running(engines) as h:
        await h.append(speech(500) + silence(700))
        await h.expect("response.created")
        events = await h.collect_until("response.done")
        err = next(e for e in events if e["type"] == "error")["error"]
        assert err["code"] == "llm_unavailable" and "unreachable" in err["message"]
        done = events[-1]["response"]
        assert done["status"] == "failed" and done["status_details"]["error"]["code"] == "llm_unavailable"
        engines.llm.down = False  # type: ignore[attr-defined]
        await h.append(speech(500) + silence(700))
        done = (await h.expect("response.done"))["response"]
        assert done["status"] == "completed"


async def test_stt_failure_reports_and_next_turn_works() -> None:
    engines = fake_engines()
    engines.stt.fail = True  # type: ignore[attr-defined]
    async with running(engines) as h:
        await h.append(speech(500) + silence(700))
        failed = await h.expect("conversation.item.input_audio_transcription.failed")
        assert failed["error"]["code"] == "transcription_failed"
        assert (await h.expect("error"))["error"]["code"] == "transcription_failed"
        assert not [e for e in await h.settle() if e["type"] == "response.created"]
        assert h.session.protocol.response is None
        engines.stt.fail = False  # type: ignore[attr-defined]
        await h.append(speech(500) + silence(700))
        assert (await h.expect("response.done"))["response"]["status"] == "completed"


async def test_manual_commit_then_response_waits_for_transcript() -> None:
    engines = fake_engines()
    engines.stt.delay_s = 0.2  # type: ignore[attr-defined]
    async with running(engines) as h:
        await h.update(audio={"input": {"turn_detection": None}})
        await h.append(speech(400))
        await h.send({"type": "input_audio_buffer.commit"})
        await h.send({"type": "response.create"})
        await h.expect("response.done")
        assert engines.llm.calls[0][-1]["content"] == "What is the capital of France?"  # type: ignore[attr-defined]


async def test_partial_transcripts_while_speaking() -> None:
    engines = fake_engines()
    async with running(engines, stt_partial_interval_ms=100) as h:
        # real-time pace so the partial loop sees the utterance grow
        for _ in range(8):
            await h.append(speech(100))
            await asyncio.sleep(0.1)
        await h.append(silence(700))
        delta = await h.expect("conversation.item.input_audio_transcription.delta")
        assert delta["delta"] == "What is the capital of France?"
        done = await h.expect("conversation.item.input_audio_transcription.completed")
        assert done["item_id"] == delta["item_id"]
        await h.expect("response.done")


async def test_pause_onset_transcription_is_reused_at_speech_end() -> None:
    engines = fake_engines()
    engines.stt.delay_s = 0.05  # type: ignore[attr-defined]
    async with running(
        engines, stt_partial_interval_ms=60_000
    ) as h:  # only the pause onset triggers a partial
        for chunk in [speech(100)] * 6 + [silence(100)] * 7:
            await h.append(chunk)
            await asyncio.sleep(0.1)
        done = await h.expect("conversation.item.input_audio_transcription.completed")
        assert done["transcript"] == "What is the capital of France?"
        assert engines.stt.calls == 1  # type: ignore[attr-defined]  # the final reused the pause partial
