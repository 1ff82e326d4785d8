"""Preemptive generation: the adopt/discard decisions with fake engines, then inside a session (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from session_fakes import FakeSTT, ScriptedLLM, WordTTS, fake_engines, running, silence, speech

from parley.local.engines import Engines
from parley.local.preemptive import Plan, Preemptor, adopted_engines
from parley.local.responder import closing_stream

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


WORDS = QUESTION[-1]["content"]


def plan(messages: list[dict[str, str]] = QUESTION, max_tokens: int = 64, audio: bool = True) -> Plan:
    return Plan.build(messages, max_tokens, audio, None)


@contextlib.asynccontextmanager
async def preemptor(engines: Engines) -> AsyncIterator[Preemptor]:
    async with asyncio.TaskGroup() as tg:

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
            return tg.create_task(coro, name=name)

        p = Preemptor(engines, spawn)
        try:
            yield p
        finally:
            p.discard(reason="test over")


async def drain(stream: AsyncIterator[Any]) -> list[Any]:
    async with closing_stream(stream) as items:
        return [item async for item in items]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_same_turn_and_plan_is_adopted_and_serves_the_same_streams() -> None:
    engines = fake_engines()
    llm, tts = engines.llm, engines.tts
    assert isinstance(llm, ScriptedLLM) and isinstance(tts, WordTTS)
    async with preemptor(engines) as p:
        p.start("item_1", WORDS, plan())
        await settle()  # the speculation ran ahead: LLM read, first phrase synthesized
        assert llm.calls == [QUESTION] and tts.spoken == ["Hello there,"]
        spec = p.adopt("item_1", plan())
        assert spec is not None and p.current is None and p.adopted == 1
        view = adopted_engines(spec, engines)
        deltas = await drain(view.llm.stream(QUESTION, max_tokens=64))
        assert deltas == llm.deltas
        audio = await drain(view.tts.synthesize("Hello there,"))
        assert sum(map(len, audio)) == 2 * 100 * 48  # two words of WordTTS audio, served from the buffer
        await drain(view.tts.synthesize("my friend."))  # later phrases go to the real engine
        assert len(llm.calls) == 1 and tts.spoken == ["Hello there,", "my friend."]


async def test_different_words_conversation_or_settings_discard() -> None:
    other_words = [QUESTION[0], {"role": "user", "content": "Capital of Spain?"}]
    changed = [
        plan(other_words),  # the final transcript differs
        plan([{"role": "system", "content": "Be long."}, QUESTION[1]]),  # instructions changed
        plan([*QUESTION[:1], {"role": "user", "content": "Hi"}, QUESTION[1]]),  # an item was added
        plan(max_tokens=10),
        plan(audio=False),
    ]
    for actual in changed:
        engines = fake_engines()
        engines.llm.delay_s = 0.01  # type: ignore[attr-defined]
        async with preemptor(engines) as p:
            p.start("item_1", WORDS, plan())
            await asyncio.sleep(0.02)
            assert p.adopt("item_1", actual) is None
            assert p.current is None and p.discarded == 1
            await settle()
            assert engines.llm.closed == 1  # type: ignore[attr-defined]  # the LLM stream was closed


async def test_another_turn_discards_a_manual_response_adopts_only_its_exact_request() -> None:
    engines = fake_engines()
    async with preemptor(engines) as p:
        p.start("item_1", WORDS, plan())
        assert p.adopt("item_2", plan()) is None
        p.start("item_1", WORDS, plan())
        assert p.adopt(None, plan(max_tokens=5)) is None  # a client's response.create asking something else
        assert p.discarded == 2 and p.adopted == 0
        p.start("item_1", WORDS, plan())
        adopted = p.adopt(None, plan())  # the relay's response.create after the same transcript, no context
        assert adopted is not None and p.adopted == 1 and p.current is None


async def test_final_transcript_with_other_words_discards() -> None:
    engines = fake_engines()
    async with preemptor(engines) as p:
        context = {"role": "system", "content": "Paris is the capital of France."}
        p.start("item_1", WORDS, plan([*QUESTION, context]))  # the words need not be the last message
        p.keep_if_words("item_1", f"  {WORDS} ")
        assert p.current is not None
        p.keep_if_words("item_1", WORDS + " and more")
        assert p.current is None and p.discarded == 1


async def test_discard_only_hits_its_own_turn_and_start_keeps_an_equal_run() -> None:
    engines = fake_engines()
    async with preemptor(engines) as p:
        p.start("item_1", WORDS, plan())
        first = p.current
        p.start("item_1", WORDS, plan())  # same plan: keep going
        assert p.current is first
        p.discard("item_2", reason="not mine")
        assert p.current is first
        p.start("item_1", WORDS, plan(max_tokens=5))  # a newer transcript or plan replaces it
        assert p.current is not first and p.discarded == 1
        p.discard("item_1", reason="speech resumed")
        assert p.current is None and p.discarded == 2


async def test_failed_speculation_is_not_adopted() -> None:
    engines = fake_engines()
    engines.llm.down = True  # type: ignore[attr-defined]
    async with preemptor(engines) as p:
        p.start("item_1", WORDS, plan())
        failed = p.current
        await settle()
        p.start("item_1", WORDS, plan())  # a re-plan to the same request does not retry it
        assert p.current is failed and len(engines.llm.calls) == 1  # type: ignore[attr-defined]
        assert p.adopt("item_1", plan()) is None


async def test_adopter_stopping_early_stops_the_speculation() -> None:
    engines = fake_engines()
    engines.llm.delay_s = 0.01  # type: ignore[attr-defined]
    async with preemptor(engines) as p:
        p.start("item_1", WORDS, plan())
        spec = p.adopt("item_1", plan())
        assert spec is not None
        view = adopted_engines(spec, engines)
        async with closing_stream(view.llm.stream(QUESTION, max_tokens=64)) as deltas:
            async for _ in deltas:
                break  # barge-in
        await settle()
        assert spec.task is not None and spec.task.done()
        assert engines.llm.closed == 1 and engines.llm.yielded < len(engines.llm.deltas)  # type: ignore[attr-defined]


# --- in a session ------------------------------------------------------------------------------------------------


async def _spoken_turn(h: Any, pause_then_resume: bool = False) -> None:
    chunks = [speech(100)] * 6
    if pause_then_resume:
        chunks += [silence(100)] * 3 + [speech(100)] * 3
    for chunk in [*chunks, *[silence(100)] * 7]:
        await h.append(chunk)
        await asyncio.sleep(0.05)


async def test_session_adopts_the_pause_speculation_and_sends_nothing_before_speech_stopped() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await _spoken_turn(h)
        events = await h.collect_until("response.done")
        kinds = [e["type"] for e in events]
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("response.created")
        assert h.session._preempt.adopted == 1
        assert len(engines.llm.calls) == 1  # type: ignore[attr-defined]
        transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert transcript["transcript"] == "Hello there, my friend. This is a test."
        timing = next(e for e in events if e["type"] == "parley.timing")
        assert timing["preemptive_start_ms"] < 0  # started before speech_stopped
        # The conversation is as if the answer was generated after speech_stopped.
        await h.send({"type": "response.create"})
        await h.expect("response.done")
        assert engines.llm.calls[1][-2:] == [  # type: ignore[attr-defined]
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Hello there, my friend. This is a test."},
        ]


async def test_session_discards_when_speech_resumes() -> None:
    engines = fake_engines()
    async with running(engines) as h:
        await _spoken_turn(h, pause_then_resume=True)
        await h.expect("response.done")
        assert h.session._preempt.discarded >= 1 and h.session._preempt.adopted == 1


async def test_session_discards_when_the_final_transcript_differs() -> None:
    engines = fake_engines()
    stt = engines.stt
    assert isinstance(stt, FakeSTT)
    stt.delay_s = 0.02
    async with running(engines) as h:
        for chunk in [speech(100)] * 6:
            await h.append(chunk)
            await asyncio.sleep(0.05)
        await h.append(silence(100))
        llm = engines.llm
        assert isinstance(llm, ScriptedLLM)
        async with asyncio.timeout(5):  # the pause-onset transcript is in, the speculation running
            while not llm.calls:
                llm.changed.clear()
                await llm.changed.wait()
        assert llm.calls[0][-1]["content"] == "What is the capital of France?"
        stt.text = "What is the capital of Spain?"
        await h.append(speech(100))  # more words: the final transcript is made anew
        for chunk in [silence(100)] * 7:
            await h.append(chunk)
            await asyncio.sleep(0.05)
        await h.expect("response.done")
        assert h.session._preempt.adopted == 1  # the second pause's speculation, on the new words
        assert engines.llm.calls[-1][-1]["content"] == "What is the capital of Spain?"  # type: ignore[attr-defined]


async def test_session_without_preemptive_generation() -> None:
    engines = fake_engines()
    async with running(engines, preemptive_generation=False) as h:
        await _spoken_turn(h)
        await h.expect("response.done")
        assert h.session._preempt.adopted == 0 and len(engines.llm.calls) == 1  # type: ignore[attr-defined]


async def test_without_create_response_the_clients_response_create_adopts_an_identical_request() -> None:
    """The relay's path: it answers the turn itself after the transcript. With nothing injected, its
    response.create is the speculated request and adopts it; nothing is sent before it."""
    engines = fake_engines()
    async with running(engines) as h:
        await h.update(audio={"input": {"turn_detection": {"type": "server_vad", "create_response": False}}})
        await _spoken_turn(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        assert not [e for e in await h.settle() if e["type"].startswith("response.")]
        assert h.session.state.active_response_id is None
        assert h.session._preempt.current is not None  # kept for the client's response.create
        assert len(engines.llm.calls) == 1  # type: ignore[attr-defined]
        await h.send({"type": "response.create"})
        events = await h.collect_until("response.done")
        assert h.session._preempt.adopted == 1 and len(engines.llm.calls) == 1  # type: ignore[attr-defined]
        transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert transcript["transcript"] == "Hello there, my friend. This is a test."
