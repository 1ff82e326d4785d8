"""Preemptive generation when the conversation changes before the turn is answered (the relay's path,
``create_response=false``): context injected or deleted during the pause, after ``speech_stopped``, or too late.

The scripted LLM holds every request after its first delta until ``llm.gate`` is set, so a speculation that is
replaced is observably cut short (``llm.complete``). Conditions on the fakes are awaited (woken by their
``changed`` event), never slept for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from session_fakes import FakeSTT, Harness, ScriptedLLM, fake_engines, running, silence, speech

INSTRUCTIONS = "Answer from the reference passages."
SYSTEM = INSTRUCTIONS + "\n\nAnswer in English."  # the session language's line follows the instructions
QUESTION = "What is the capital of France?"  # what FakeSTT hears
ANSWER = "Hello there, my friend. This is a test."  # what ScriptedLLM says
CONTEXT = "Paris is the capital of France."
RELAY_MODE = {
    "instructions": INSTRUCTIONS,
    "audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}},
}


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def context_item(item_id: str, text: str) -> dict[str, Any]:
    """The relay's context item: a system message, no previous_item_id (appended at the end)."""
    content = [{"type": "input_text", "text": text}]
    item = {"id": item_id, "type": "message", "role": "system", "content": content}
    return {"type": "conversation.item.create", "item": item}


async def until(changed: asyncio.Event, cond: Callable[[], bool], wait_s: float = 5.0) -> None:
    """Wait for a state of the fakes that the session reaches by itself; a timeout fails the test."""
    async with asyncio.timeout(wait_s):
        while not cond():
            changed.clear()
            await changed.wait()


async def pause(h: Harness) -> None:
    """600 ms of speech, then the first 100 ms of silence: the pause onset (its transcript is started)."""
    await h.append(speech(600))
    await h.append(silence(100))


async def stop(h: Harness) -> None:
    await h.append(silence(600))
    await h.expect("input_audio_buffer.speech_stopped")


async def processed(h: Harness, item_id: str) -> None:
    """Every event sent so far has been handled (events are handled in order)."""
    await h.send({"type": "conversation.item.retrieve", "item_id": item_id})
    await h.expect("conversation.item.retrieved")


def fakes() -> tuple[Any, ScriptedLLM, FakeSTT]:
    engines = fake_engines()
    llm, stt = engines.llm, engines.stt
    assert isinstance(llm, ScriptedLLM) and isinstance(stt, FakeSTT)
    llm.gate = asyncio.Event()
    stt.changed = llm.changed  # one event wakes ``until`` for either
    return engines, llm, stt


async def answer(h: Harness) -> list[dict[str, Any]]:
    await h.send({"type": "response.create"})
    events = await h.collect_until("response.done")
    done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert done["transcript"] == ANSWER
    return events


async def test_context_injected_during_the_pause_restarts_the_speculation_which_is_adopted() -> None:
    engines, llm, _ = fakes()
    async with running(engines) as h:
        await h.update(**RELAY_MODE)
        await pause(h)
        await until(llm.changed, lambda: len(llm.calls) == 1)  # speculating on the words alone
        await h.send(context_item("item_ctx1", CONTEXT))
        await until(llm.changed, lambda: len(llm.calls) == 2)  # re-planned at once, with the context
        llm.gate.set()
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await answer(h)
        roles = [item.role for item in h.session.protocol.conversation]
        assert h.session.protocol.speculations.adopted == 1
    # The context item came before the user item was committed: it sits before the question in the
    # conversation, so the speculation (words appended) and the response (the committed item) agree.
    assert roles == ["system", "user", "assistant"]
    assert llm.calls == [
        [msg("system", SYSTEM), msg("user", QUESTION)],
        [msg("system", SYSTEM), msg("system", CONTEXT), msg("user", QUESTION)],
    ]
    assert llm.complete == [False, True]  # the first speculation was cut short; the second one was the answer


@pytest.mark.parametrize("arrives", ["before the final transcript", "after the final transcript"])
async def test_context_injected_after_speech_stopped_is_speculated_on_and_adopted(arrives: str) -> None:
    engines, llm, stt = fakes()
    early = arrives == "before the final transcript"
    async with running(engines) as h:
        await h.update(**RELAY_MODE)
        if early:
            stt.gate = asyncio.Event()  # the pause's transcription (which the final waits for) is held
        await pause(h)
        await until(llm.changed, lambda: stt.calls == 1 and (early or len(llm.calls) == 1))
        await stop(h)
        if not early:
            await h.expect("conversation.item.input_audio_transcription.completed")
        await h.send(context_item("item_ctx1", CONTEXT))
        await processed(h, "item_ctx1")
        if stt.gate is not None:
            stt.gate.set()
        await until(llm.changed, lambda: any(msg("system", CONTEXT) in call for call in llm.calls))
        llm.gate.set()
        if early:
            await h.expect("conversation.item.input_audio_transcription.completed")
        await answer(h)
        assert h.session.protocol.speculations.adopted == 1
    # The user item was committed before the context arrived: the question comes first, in both.
    adopted = [msg("system", SYSTEM), msg("user", QUESTION), msg("system", CONTEXT)]
    assert [call for call in llm.calls if msg("system", CONTEXT) in call] == [adopted]
    assert llm.calls[-1] == adopted and llm.complete[-1]
    assert not any(llm.complete[:-1])  # a speculation without the context was cut short


async def test_deleting_the_previous_context_and_injecting_the_next_during_the_pause() -> None:
    engines, llm, stt = fakes()
    llm.gate.set()
    async with running(engines) as h:
        await h.update(**RELAY_MODE)
        await pause(h)
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await h.send(context_item("item_ctx1", CONTEXT))
        await answer(h)
        first_turn = len(llm.calls)
        adopted = h.session.protocol.speculations.adopted

        llm.gate = asyncio.Event()
        stt.text = "And of Spain?"
        await pause(h)
        await until(llm.changed, lambda: len(llm.calls) == first_turn + 1)
        await h.send({"type": "conversation.item.delete", "item_id": "item_ctx1"})
        await h.send(context_item("item_ctx2", "Madrid is the capital of Spain."))
        assert (await h.expect("conversation.item.deleted"))["item_id"] == "item_ctx1"
        await until(
            llm.changed, lambda: any(msg("system", "Madrid is the capital of Spain.") in c for c in llm.calls)
        )
        llm.gate.set()
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await answer(h)
        assert h.session.protocol.speculations.adopted == adopted + 1
    second_turn = llm.calls[first_turn:]
    final = [
        msg("system", SYSTEM),
        msg("user", QUESTION),
        msg("assistant", ANSWER),
        msg("system", "Madrid is the capital of Spain."),
        msg("user", "And of Spain?"),
    ]
    assert [c for c in second_turn if msg("system", "Madrid is the capital of Spain.") in c] == [final]
    assert second_turn[-1] == final and llm.complete[-1]
    assert not any(llm.complete[first_turn:-1])  # the speculations made with the old context were cut short
    assert msg("system", CONTEXT) in second_turn[0]  # the first one still had it


async def test_context_after_response_create_is_too_late_and_starts_nothing() -> None:
    engines, llm, _ = fakes()
    llm.gate.set()
    async with running(engines) as h:
        await h.update(**RELAY_MODE)
        await pause(h)
        await until(llm.changed, lambda: len(llm.calls) == 1)
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await h.send({"type": "response.create"})
        await h.expect("response.created")  # its request is fixed by now (no transcript pending)
        await h.send(context_item("item_ctx1", CONTEXT))
        await h.expect("response.done")
        await processed(h, "item_ctx1")
        assert (
            h.session.protocol.speculations.adopted == 1 and h.session.protocol.speculations.current is None
        )
        assert llm.calls == [[msg("system", SYSTEM), msg("user", QUESTION)]]  # nothing speculated anew
        await answer(h)  # the next response sees the late context after the first answer, fresh
        assert h.session.protocol.speculations.adopted == 1
    assert llm.calls[1] == [
        msg("system", SYSTEM),
        msg("user", QUESTION),
        msg("assistant", ANSWER),
        msg("system", CONTEXT),
    ]


async def test_context_injected_in_a_pause_then_speech_resumes_with_other_words() -> None:
    engines, llm, stt = fakes()
    madrid = "Madrid is the capital of Spain."
    spain = "What is the capital of Spain?"
    async with running(engines) as h:
        await h.update(**RELAY_MODE)
        await pause(h)
        await until(llm.changed, lambda: len(llm.calls) == 1)
        await h.send(context_item("item_ctx1", CONTEXT))
        await until(llm.changed, lambda: len(llm.calls) == 2)
        stt.text = spain
        await h.append(speech(300))  # speech resumes: the speculation is dropped
        await until(llm.changed, lambda: llm.closed == 2)
        assert h.session.protocol.speculations.current is None
        # While the user speaks, the relay swaps the context (it retrieves on partials): no speculation.
        await h.send({"type": "conversation.item.delete", "item_id": "item_ctx1"})
        await h.send(context_item("item_ctx2", madrid))
        await processed(h, "item_ctx2")
        assert h.session.protocol.speculations.current is None and len(llm.calls) == 2
        await h.append(silence(100))  # the second pause: the other words
        await until(llm.changed, lambda: len(llm.calls) == 3)
        llm.gate.set()
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await answer(h)
        assert h.session.protocol.speculations.adopted == 1
    assert llm.calls[2] == [msg("system", SYSTEM), msg("system", madrid), msg("user", spain)]
    assert llm.complete == [False, False, True]


async def test_instructions_changed_during_the_pause_restart_the_speculation() -> None:
    engines, llm, _ = fakes()
    async with running(engines) as h:
        await h.update(**RELAY_MODE)
        await pause(h)
        await until(llm.changed, lambda: len(llm.calls) == 1)
        await h.update(instructions="Be brief.")
        await until(llm.changed, lambda: len(llm.calls) == 2)
        llm.gate.set()
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await answer(h)
        assert h.session.protocol.speculations.adopted == 1
    assert llm.calls[1] == [msg("system", "Be brief.\n\nAnswer in English."), msg("user", QUESTION)]
    assert llm.complete == [False, True]


async def test_a_relay_gets_time_to_add_context_before_the_speculation_starts() -> None:
    # A grace no test could wait out: the speculation can only start because the context arrived.
    engines, llm, stt = fakes()
    llm.gate.set()
    async with running(engines, preemptive_client_grace_ms=600_000) as h:
        await h.update(**RELAY_MODE)
        await pause(h)
        pause_words = await h.expect("parley.pause_transcript")  # the relay looks up context for these
        assert pause_words["text"] == QUESTION
        await until(llm.changed, lambda: stt.calls == 1)
        assert llm.calls == []  # waiting for the client's context
        await h.send(context_item("item_ctx1", CONTEXT))
        await until(llm.changed, lambda: len(llm.calls) == 1)
        await stop(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        await answer(h)
        assert h.session.protocol.speculations.adopted == 1
    assert llm.calls == [[msg("system", SYSTEM), msg("system", CONTEXT), msg("user", QUESTION)]]
