"""Preemptive generation: the pure start/discard/adopt decisions (``Speculations``), the speculative streams with
fake engines (``Speculation``, ``adopted_engines``), then inside a session (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from session_fakes import FakeSTT, ScriptedLLM, WordTTS, fake_engines, running, silence, speech

from parley.local.effects import Discard, Speculate
from parley.local.engines import Engines
from parley.local.plan import Plan
from parley.local.preemptive import Speculation, adopted_engines
from parley.local.responder import closing_stream
from parley.local.speculation import Speculations

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


WORDS = QUESTION[-1]["content"]


def plan(messages: list[dict[str, str]] = QUESTION, max_tokens: int = 64, audio: bool = True) -> Plan:
    return Plan.build(messages, max_tokens, audio, None)


# --- the decisions (pure) -----------------------------------------------------------------------------------------


def test_same_turn_and_plan_is_adopted() -> None:
    s = Speculations()
    assert s.start("item_1", WORDS, plan(), now=10.0) == [Speculate(1, plan())]
    guess, out = s.adopt("item_1", plan(), now=10.3)
    assert guess is not None and (guess.id, guess.started) == (1, 10.0) and out == []
    assert s.current is None and (s.adopted, s.discarded) == (1, 0)


def test_different_words_conversation_or_settings_discard() -> None:
    other_words = [QUESTION[0], {"role": "user", "content": "Capital of Spain?"}]
    changed = [
        plan(other_words),  # the final transcript differs
        plan([{"role": "system", "content": "Be long."}, QUESTION[1]]),  # instructions changed
        plan([*QUESTION[:1], {"role": "user", "content": "Hi"}, QUESTION[1]]),  # an item was added
        plan(max_tokens=10),
        plan(audio=False),
    ]
    for actual in changed:
        s = Speculations()
        s.start("item_1", WORDS, plan(), now=0.0)
        assert s.adopt("item_1", actual, now=0.1) == (None, [Discard(1)])
        assert s.current is None and (s.adopted, s.discarded) == (0, 1)


def test_another_turn_discards_a_manual_response_adopts_only_its_exact_request() -> None:
    s = Speculations()
    s.start("item_1", WORDS, plan(), now=0.0)
    assert s.adopt("item_2", plan(), now=0.0) == (None, [Discard(1)])
    s.start("item_1", WORDS, plan(), now=0.0)
    # a client's response.create asking something else
    assert s.adopt(None, plan(max_tokens=5), now=0.0) == (None, [Discard(2)])
    assert s.discarded == 2 and s.adopted == 0
    s.start("item_1", WORDS, plan(), now=0.0)
    adopted, _ = s.adopt(None, plan(), now=0.0)  # the relay's response.create after the same transcript
    assert adopted is not None and adopted.id == 3 and s.adopted == 1 and s.current is None


def test_final_transcript_with_other_words_discards() -> None:
    s = Speculations()
    context = {"role": "system", "content": "Paris is the capital of France."}
    s.start("item_1", WORDS, plan([*QUESTION, context]), now=0.0)  # the words need not be the last message
    assert s.keep_if_words("item_1", f"  {WORDS} ") == [] and s.current is not None
    assert s.keep_if_words("item_2", "other words") == [] and s.current is not None
    assert s.keep_if_words("item_1", WORDS + " and more") == [Discard(1)]
    assert s.current is None and s.discarded == 1


def test_discard_only_hits_its_own_turn_and_start_keeps_an_equal_run() -> None:
    s = Speculations()
    s.start("item_1", WORDS, plan(), now=0.0)
    first = s.current
    assert s.start("item_1", WORDS, plan(), now=1.0) == []  # same plan: keep going
    assert s.current is first
    assert s.discard("item_2", reason="not mine") == [] and s.current is first
    # a newer plan replaces it
    assert s.start("item_1", WORDS, plan(max_tokens=5), now=2.0) == [
        Discard(1),
        Speculate(2, plan(max_tokens=5)),
    ]
    assert s.discarded == 1
    assert s.discard("item_1", reason="speech resumed") == [Discard(2)]
    assert s.current is None and s.discarded == 2


def test_failed_speculation_is_kept_not_retried_and_not_adopted() -> None:
    s = Speculations()
    s.start("item_1", WORDS, plan(), now=0.0)
    s.failed(99)  # another (older) one: nothing
    assert s.current is not None and not s.current.failed
    s.failed(1)
    assert s.start("item_1", WORDS, plan(), now=1.0) == []  # a re-plan to the same request does not retry it
    assert s.adopt("item_1", plan(), now=1.0) == (None, [Discard(1)])


# --- the streams (fake engines) -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def speculating(engines: Engines, p: Plan | None = None) -> AsyncIterator[Speculation]:
    spec = Speculation(p or plan(), engines)
    async with asyncio.TaskGroup() as tg:
        spec.task = tg.create_task(spec.run())
        try:
            yield spec
        finally:
            spec.cancel()


async def drain(stream: AsyncIterator[Any]) -> list[Any]:
    async with closing_stream(stream) as items:
        return [item async for item in items]


async def until(changed: asyncio.Event, cond: Any) -> None:
    async with asyncio.timeout(5):
        while not cond():
            changed.clear()
            await changed.wait()


async def test_an_adopted_speculation_serves_the_same_streams() -> None:
    engines = fake_engines()
    llm, tts = engines.llm, engines.tts
    assert isinstance(llm, ScriptedLLM) and isinstance(tts, WordTTS)
    async with speculating(engines) as spec:
        await until(llm.changed, lambda: llm.closed == 1)  # the speculation read the whole LLM stream ahead
        view = adopted_engines(spec, engines)
        deltas = await drain(view.llm.stream(QUESTION, max_tokens=64))
        assert deltas == llm.deltas
        audio = await drain(view.tts.synthesize("Hello there,"))
        assert sum(map(len, audio)) == 2 * 100 * 48  # two words of WordTTS audio, served from the buffer
        await drain(view.tts.synthesize("my friend."))  # later phrases go to the real engine
        assert len(llm.calls) == 1 and tts.spoken == ["Hello there,", "my friend."]


async def test_a_discarded_speculation_closes_its_llm_stream() -> None:
    engines = fake_engines()
    llm = engines.llm
    assert isinstance(llm, ScriptedLLM)
    llm.gate = asyncio.Event()  # held after the first delta
    async with speculating(engines) as spec:
        await until(llm.changed, lambda: llm.yielded == 1)
        spec.cancel()
        await until(llm.changed, lambda: llm.closed == 1)
        assert llm.complete == [False]


async def test_a_failed_speculation_keeps_its_error_for_the_adopter() -> None:
    engines = fake_engines()
    llm = engines.llm
    assert isinstance(llm, ScriptedLLM)
    llm.down = True
    async with speculating(engines) as spec:
        assert spec.task is not None
        await spec.task  # does not raise into the session
        assert spec.error is not None and "unreachable" in str(spec.error)


async def test_adopter_stopping_early_stops_the_speculation() -> None:
    engines = fake_engines()
    llm = engines.llm
    assert isinstance(llm, ScriptedLLM)
    llm.gate = asyncio.Event()
    async with speculating(engines) as spec:
        view = adopted_engines(spec, engines)
        async with closing_stream(view.llm.stream(QUESTION, max_tokens=64)) as deltas:
            async for _ in deltas:
                break  # barge-in
        assert spec.task is not None
        await asyncio.wait([spec.task])
        assert llm.closed == 1 and llm.yielded < len(llm.deltas)


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
        assert h.session.protocol.speculations.adopted == 1
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
        assert h.session.protocol.speculations.discarded >= 1 and h.session.protocol.speculations.adopted == 1


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
        assert (
            h.session.protocol.speculations.adopted == 1
        )  # the second pause's speculation, on the new words
        assert engines.llm.calls[-1][-1]["content"] == "What is the capital of Spain?"  # type: ignore[attr-defined]


async def test_session_without_preemptive_generation() -> None:
    engines = fake_engines()
    async with running(engines, preemptive_generation=False) as h:
        await _spoken_turn(h)
        await h.expect("response.done")
        assert h.session.protocol.speculations.adopted == 0 and len(engines.llm.calls) == 1  # type: ignore[attr-defined]


async def test_without_create_response_the_clients_response_create_adopts_an_identical_request() -> None:
    """The relay's path: it answers the turn itself after the transcript. With nothing injected, its
    response.create is the speculated request and adopts it; nothing is sent before it."""
    engines = fake_engines()
    async with running(engines) as h:
        await h.update(audio={"input": {"turn_detection": {"type": "server_vad", "create_response": False}}})
        await _spoken_turn(h)
        await h.expect("conversation.item.input_audio_transcription.completed")
        assert not [e for e in await h.settle() if e["type"].startswith("response.")]
        assert h.session.protocol.response is None
        assert h.session.protocol.speculations.current is not None  # kept for the client's response.create
        assert len(engines.llm.calls) == 1  # type: ignore[attr-defined]
        await h.send({"type": "response.create"})
        events = await h.collect_until("response.done")
        assert h.session.protocol.speculations.adopted == 1 and len(engines.llm.calls) == 1  # type: ignore[attr-defined]
        transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
        assert transcript["transcript"] == "Hello there, my friend. This is a test."
