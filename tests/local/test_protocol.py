"""The pure local protocol driven by a scripted peer (``protocol_peer``): a fake clock, client events and engine
results in, effects taken one by one as expected. The turn's phases, the early answer, the response and their
timings, to the millisecond of the fake clock; no sockets, no tasks, no sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from protocol_peer import Peer
from session_fakes import silence, speech

from parley.errors import STTFailed
from parley.local.effects import Discard, Generate, Speculate, StopGenerating, Transcribe
from parley.local.engines import LLMEnd
from parley.local.turn import TurnPhase
from parley.realtime.audio import BYTES_PER_MS

QUESTION = "What is the capital of France?"
INSTRUCTIONS = "Be brief."
SYSTEM = "Be brief.\n\nAnswer in English."  # the instructions, then the session language's line


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.done()  # every effect the protocol asked for was taken and checked


@pytest.fixture
def peer(peers: list[Peer]) -> Peer:
    made = Peer()
    peers.append(made)
    made.update(instructions=INSTRUCTIONS)
    return made


def pause(peer: Peer) -> Transcribe:
    """600 ms of speech, then the first 100 ms of silence: the pause onset transcribes the speech so far."""
    peer.append(speech(600))
    assert peer.p.turn is not None and peer.p.turn.phase is TurnPhase.SPEAKING
    peer.append(silence(100))
    assert peer.p.turn.phase is TurnPhase.PAUSED
    return peer.take(Transcribe)


def answer(peer: Peer, response_id: str, text: str = "Paris.") -> list[dict]:
    """The engines' side of a generation: one phrase of 100 ms of audio, then the end."""
    p = peer.p
    peer.clock.now += 0.05
    peer.run(p.on_llm(response_id, text))
    peer.run(p.on_phrase(response_id, text))
    peer.clock.now += 0.05
    events = peer.run(p.on_audio(response_id, b"\x01\x00" * (100 * BYTES_PER_MS // 2)))
    events += peer.run(p.on_phrase_end(response_id))
    events += peer.run(p.on_llm(response_id, LLMEnd("stop")))
    return events + peer.run(p.on_generated(response_id))


def test_a_spoken_turn_is_answered_by_its_pause_speculation(peer: Peer) -> None:
    p = peer.p
    partial = pause(peer)
    assert partial.pcm == speech(600) + silence(100)
    pause_events = peer.run(p.on_transcribed(partial.job, QUESTION))
    assert peer.kinds(pause_events) == [
        "parley.pause_transcript",  # the relay looks up context for these words
        "conversation.item.input_audio_transcription.delta",
    ]
    spec = peer.take(Speculate)
    assert spec.plan.llm_messages() == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    speculated_at = peer.clock.now
    assert p.turn is not None and p.turn.words == QUESTION

    assert peer.append(silence(300)) == []  # within silence_duration_ms (500): the user may go on
    stopped_at = peer.clock.now
    stop = peer.append(silence(100))  # the VAD ends the turn (at 600 ms); nothing is transcribed again
    assert peer.kinds(stop) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert stop[0]["audio_end_ms"] == 600 and stop[3]["transcript"] == QUESTION
    generate = peer.take(Generate)
    assert (generate.adopt, generate.plan) == (
        spec.id,
        spec.plan,
    )  # the request is exactly the speculated one
    assert p.turn.phase is TurnPhase.ANSWERED and p.speculations.adopted == 1

    events = answer(peer, generate.response_id)
    done = events[-1]["response"]
    assert (done["status"], done["output"][0]["content"][0]["transcript"]) == ("completed", "Paris.")
    timing = events[-2]
    assert timing["type"] == "parley.timing"
    assert timing["preemptive_start_ms"] == pytest.approx((speculated_at - stopped_at) * 1000) == -300.0
    # the stop's append took 100 ms of the clock; the engines answered 50 ms, then 100 ms after that
    assert (timing["response_start_ms"], timing["llm_first_token_ms"], timing["first_audio_ms"]) == (
        pytest.approx(0.0),
        pytest.approx(150.0),
        pytest.approx(200.0),
    )
    assert [i.role for i in p.conversation] == ["user", "assistant"] and p.response is None


def test_speech_resuming_discards_and_the_next_pause_speculates_anew(peer: Peer) -> None:
    p = peer.p
    partial = pause(peer)
    peer.run(p.on_transcribed(partial.job, "What is"))
    first = peer.take(Speculate)
    peer.append(speech(300))
    assert peer.take(Discard).id == first.id
    assert p.turn is not None and (p.turn.phase, p.turn.words) == (TurnPhase.SPEAKING, None)
    peer.append(silence(100))
    second = peer.take(Transcribe)
    assert len(second.pcm) == (600 + 100 + 300 + 100) * BYTES_PER_MS
    peer.run(p.on_transcribed(partial.job, "stale"))  # a result already taken is not taken again
    peer.run(p.on_transcribed(second.job, QUESTION))
    spec = peer.take(Speculate)
    assert spec.plan.llm_messages()[-1] == {"role": "user", "content": QUESTION}
    peer.append(silence(500))
    assert peer.take(Generate).adopt == spec.id
    assert (p.speculations.adopted, p.speculations.discarded) == (1, 1)


def test_a_relay_gets_its_grace_then_context_restarts_the_speculation(peers: list[Peer]) -> None:
    peer = Peer(client_grace_ms=400)
    peers.append(peer)
    p = peer.p
    peer.update(
        instructions=INSTRUCTIONS,
        audio={"input": {"turn_detection": {"type": "server_vad", "create_response": False}}},
    )
    partial = pause(peer)
    assert peer.kinds(peer.run(p.on_transcribed(partial.job, QUESTION)))[0] == "parley.pause_transcript"
    assert p.next_deadline() == pytest.approx(peer.clock.now + 0.4)  # no speculation yet: the relay's grace
    peer.advance(0.39)
    ctx = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Paris is."}]}
    peer.send(type="conversation.item.create", item=ctx)
    assert p.next_deadline() == pytest.approx(peer.clock.now + 0.01)  # the context ends the wait: a re-plan
    peer.advance(0.01)
    spec = peer.take(Speculate)
    assert [m["content"] for m in spec.plan.llm_messages()] == [SYSTEM, "Paris is.", QUESTION]
    stop = peer.append(silence(500))
    assert "response.created" not in peer.kinds(stop)  # the relay answers the turn itself
    assert p.turn is not None and p.turn.phase is TurnPhase.COMMITTED
    peer.send(type="response.create")
    assert peer.take(Generate).adopt == spec.id


def test_barge_in_closes_the_response_at_once_and_ignores_its_late_results(peer: Peer) -> None:
    p = peer.p
    peer.send(type="response.create")
    generate = peer.take(Generate)
    assert peer.run(p.on_llm(generate.response_id, "Hello there. ")) == []
    peer.run(p.on_phrase(generate.response_id, "Hello there."))
    assert "response.output_audio.delta" in peer.kinds(
        peer.run(p.on_audio(generate.response_id, b"\0\0" * 480))
    )
    barge = peer.append(speech(100))
    assert peer.take(StopGenerating).response_id == generate.response_id
    assert peer.kinds(barge)[0] == "input_audio_buffer.speech_started"
    done = barge[-1]["response"]
    assert (done["id"], done["status_details"]) == (
        generate.response_id,
        {"type": "cancelled", "reason": "turn_detected"},
    )
    assert p.response is None
    for late in (p.on_audio(generate.response_id, b"\0\0"), p.on_phrase_end(generate.response_id)):
        assert late == []
    assert p.on_generated(generate.response_id) == []


def test_the_final_waits_for_the_running_partial_and_runs_alone_when_it_fails(peer: Peer) -> None:
    p = peer.p
    partial = pause(peer)
    stop = peer.append(silence(500))  # the pause's transcription is still running: no second run
    assert peer.kinds(stop)[-1] == "conversation.item.added"
    peer.run(p.on_transcribe_failed(partial.job, STTFailed("worker busy")))
    final = peer.take(Transcribe)  # the final on its own
    assert final.item_id == partial.item_id and len(final.pcm) == 600 * BYTES_PER_MS
    events = peer.run(p.on_transcribed(final.job, QUESTION))
    assert peer.kinds(events)[:3] == [
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
    ]
    assert peer.take(Generate).adopt is None


def test_a_response_waits_for_its_transcripts_then_gives_up(peer: Peer) -> None:
    p = peer.p
    peer.update(audio={"input": {"turn_detection": None}})
    peer.append(speech(400))
    peer.send(type="input_audio_buffer.commit")
    final = peer.take(Transcribe)
    created = peer.send(type="response.create")
    assert peer.kinds(created)[0] == "response.created"  # its request waits for the transcript
    assert peer.advance(29.9) == []
    expired = peer.advance(0.2)
    assert peer.kinds(expired)[0] == "error" and expired[-1]["response"]["status"] == "failed"
    late = peer.run(p.on_transcribed(final.job, QUESTION))
    assert peer.kinds(late) == [
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]

    peer.append(speech(400))
    peer.send(type="input_audio_buffer.commit")
    second = peer.take(Transcribe)
    peer.send(type="response.create")
    peer.run(p.on_transcribed(second.job, "And Spain?"))
    plan = peer.take(Generate).plan
    assert [m["content"] for m in plan.llm_messages()][-2:] == [QUESTION, "And Spain?"]


def test_periodic_partials_run_one_at_a_time_and_never_in_a_pause(peers: list[Peer]) -> None:
    peer = Peer(partial_interval_ms=200)
    peers.append(peer)
    p = peer.p
    peer.append(speech(400))  # due at 200 ms (under MIN_PARTIAL_MS: waits), then at 400 ms
    first = peer.take(Transcribe)
    assert len(first.pcm) == 400 * BYTES_PER_MS
    peer.append(speech(400))  # one run at a time: nothing while the first is out
    delta = peer.run(p.on_transcribed(first.job, "What is"))
    assert [(e["type"], e["delta"]) for e in delta] == [
        ("conversation.item.input_audio_transcription.delta", "What is")
    ]
    peer.append(silence(100))  # the pause onset runs at once
    onset = peer.take(Transcribe)
    peer.run(p.on_transcribed(onset.job, QUESTION))
    peer.take(Speculate)
    assert peer.advance(0.4) == []  # inside the pause: no periodic run
    peer.append(silence(400))
    peer.take(Generate)


def test_a_strict_client_gets_no_parley_events(peers: list[Peer]) -> None:
    peer = Peer(parley_events=False)
    peers.append(peer)
    partial = pause(peer)
    pause_events = peer.run(peer.p.on_transcribed(partial.job, QUESTION))
    assert peer.kinds(pause_events) == ["conversation.item.input_audio_transcription.delta"]
    peer.take(Speculate)
    peer.append(silence(500))
    events = answer(peer, peer.take(Generate).response_id)
    assert not [e for e in peer.events if e["type"].startswith("parley.")]
    assert events[-1]["type"] == "response.done"


def test_a_response_asking_for_something_else_discards_the_speculation(peer: Peer) -> None:
    p = peer.p
    peer.update(audio={"input": {"turn_detection": {"type": "server_vad", "create_response": False}}})
    partial = pause(peer)
    peer.run(p.on_transcribed(partial.job, QUESTION))
    spec = peer.take(Speculate)
    peer.append(silence(500))
    peer.send(type="response.create", response={"instructions": "Only French."})
    assert peer.take(Discard).id == spec.id
    generate = peer.take(Generate)
    assert (
        generate.adopt is None
        and generate.plan.llm_messages()[0]["content"] == "Only French.\n\nAnswer in English."
    )
    assert (p.speculations.adopted, p.speculations.discarded) == (0, 1)
