"""Pure tests of context injection: speculative lookups during the pause, reuse at speech end, one context item
at a time in the upstream conversation, nothing stale after a barge-in or a failed lookup."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pure_session import opened

from parley.errors import Forbidden
from parley.relay.auth import Principal, kb_for
from parley.relay.context import Context, Passage, build_query, context_text, is_follow_up, same_query
from parley.relay.session import FetchContext, RelaySession, SessionConfig, ToClient, ToUpstream
from parley.relay.wire import UpstreamSessionConfig
from parley.settings import Settings


def make(**kw: Any) -> RelaySession:
    cfg = SessionConfig(
        session_id="sess_test",
        provider="local",
        parley_events=kw.pop("parley_events", True),  # these tests read parley.* events (default: pure GA)
        upstream=UpstreamSessionConfig(instructions="Be brief."),
        **kw,
    )
    return opened(RelaySession(cfg, now=0.0))


def ev(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields}, separators=(",", ":"), ensure_ascii=False)


def client(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToClient)]


def upstream(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, ToUpstream)]


def fetches(actions: list[Any]) -> list[FetchContext]:
    return [a for a in actions if isinstance(a, FetchContext)]


def ctx(*chunks: str) -> Context:
    return Context([Passage(f"text of {c}", f"/kb/{c}.md", 0.8, title=c.title(), chunk_id=c) for c in chunks])


def delta(s: RelaySession, item: str, text: str, t: float) -> list[Any]:
    return s.on_upstream_text(
        ev("conversation.item.input_audio_transcription.delta", item_id=item, delta=text), t
    )


def final(s: RelaySession, item: str, text: str, t: float) -> list[Any]:
    s.on_upstream_text(ev("input_audio_buffer.speech_stopped", item_id=item), t)
    s.on_upstream_text(ev("input_audio_buffer.committed", item_id=item), t + 0.001)
    done = ev("conversation.item.input_audio_transcription.completed", item_id=item, transcript=text)
    return s.on_upstream_text(done, t + 0.002)


def speech(s: RelaySession, t: float) -> None:
    s.on_upstream_text(ev("input_audio_buffer.speech_started"), t)


def test_speculative_lookup_is_injected_during_the_pause_and_reused_at_speech_end() -> None:
    s = make()
    speech(s, 1.0)
    (spec,) = fetches(delta(s, "item_u1", "How long do duck eggs", 1.5))
    assert spec.turn is None and spec.item_id == "item_u1" and spec.query == "How long do duck eggs"
    # the pause-onset transcript arrives while the first lookup runs: it waits, then replaces it
    assert fetches(delta(s, "item_u1", " take to hatch", 2.0)) == []
    (spec2,) = fetches(s.on_context(spec, ctx("chicken"), "ok", 9.0, 2.01))
    assert spec2.query == "How long do duck eggs take to hatch"
    injected = upstream(s.on_context(spec2, ctx("duck"), "ok", 8.0, 2.1))
    assert [e["type"] for e in injected] == ["conversation.item.create"]
    assert injected[0]["item"]["id"].startswith("parley_ctx_") and injected[0]["item"]["role"] == "system"
    assert "text of duck" in injected[0]["item"]["content"][0]["text"]
    # speech end, same words (up to punctuation): no new lookup, no rewrite, the answer is asked for at once
    actions = final(s, "item_u1", "How long do duck eggs take to hatch?", 2.5)
    assert fetches(actions) == []
    assert [e["type"] for e in upstream(actions)] == ["response.create"]
    (context_event,) = [e for e in client(actions) if e["type"] == "parley.context"]
    assert context_event["speculative"] is True and context_event["status"] == "ok"
    assert context_event["retrieval_ms"] == 8.0 and context_event["wait_ms"] == 0.0
    assert [x["source"] for x in context_event["sources"]] == ["duck.md"]  # a file is named, not its path


def test_final_words_differ_but_the_same_passages_keep_the_injected_item() -> None:
    s = make()
    speech(s, 1.0)
    (spec,) = fetches(delta(s, "item_u1", "duck eggs hatching", 1.5))
    s.on_context(spec, ctx("duck"), "ok", 5.0, 1.6)
    (fin,) = fetches(final(s, "item_u1", "how long for duck eggs to hatch", 2.0))
    assert fin.turn is not None
    actions = s.on_context(fin, ctx("duck"), "ok", 6.0, 2.01)
    assert [e["type"] for e in upstream(actions)] == ["response.create"]  # the upstream's speculation stands


def test_final_with_other_passages_replaces_the_item_before_answering() -> None:
    s = make()
    speech(s, 1.0)
    (spec,) = fetches(delta(s, "item_u1", "goose", 1.5))
    first = upstream(s.on_context(spec, ctx("goose"), "ok", 5.0, 1.6))[0]["item"]["id"]
    (fin,) = fetches(final(s, "item_u1", "how warm should a brooder be", 2.0))
    delete, create, respond = upstream(s.on_context(fin, ctx("brooder"), "ok", 6.0, 2.01))
    assert delete["type"] == "conversation.item.delete" and delete["item_id"] == first
    assert create["type"] == "conversation.item.create" and create["item"]["id"] != first
    assert respond["type"] == "response.create"


def test_only_the_current_turns_context_stays_in_the_conversation() -> None:
    s = make()
    live: set[str] = set()
    for n, chunk in enumerate(["duck", "goose", "quail"]):
        speech(s, 10.0 * n)
        (fin,) = fetches(final(s, f"item_u{n}", f"question about {chunk}s", 10.0 * n + 1))
        for e in upstream(s.on_context(fin, ctx(chunk), "ok", 5.0, 10.0 * n + 1.1)):
            if e["type"] == "conversation.item.create":
                live.add(e["item"]["id"])
            elif e["type"] == "conversation.item.delete":
                live.remove(e["item_id"])
        s.on_upstream_text(ev("response.created", response={"id": f"r{n}"}), 10.0 * n + 1.2)
        s.on_upstream_text(ev("response.done", response={"id": f"r{n}", "status": "completed"}), 10.0 * n + 2)
        assert len(live) == 1


def test_a_barge_in_during_retrieval_injects_nothing_stale() -> None:
    s = make()
    speech(s, 1.0)
    (fin,) = fetches(final(s, "item_u1", "how long do goose eggs take", 2.0))
    speech(s, 2.05)  # the user speaks again before the lookup returned
    assert s.on_context(fin, ctx("goose"), "ok", 6.0, 2.1) == []
    # a late speculative result for the finished utterance is dropped too
    assert (
        upstream(s.on_context(FetchContext(None, "goose", item_id="item_u1"), ctx("goose"), "ok", 1, 2.2))
        == []
    )
    (fin2,) = fetches(final(s, "item_u2", "what do chicks eat", 3.0))
    sent = upstream(s.on_context(fin2, ctx("feed"), "ok", 6.0, 3.1))
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]
    assert "feed" in sent[0]["item"]["content"][0]["text"]


def test_a_timed_out_final_lookup_removes_a_speculative_item_for_other_words() -> None:
    s = make()
    speech(s, 1.0)
    (spec,) = fetches(delta(s, "item_u1", "geese", 1.5))
    s.on_context(spec, ctx("goose"), "ok", 5.0, 1.6)
    (fin,) = fetches(final(s, "item_u1", "what is the price of a tractor", 2.0))
    delete, respond = upstream(s.on_context(fin, None, "timeout", 150.0, 2.15))
    assert delete["type"] == "conversation.item.delete" and respond["type"] == "response.create"


def test_the_turn_waits_for_a_running_speculative_lookup_of_the_same_words() -> None:
    s = make()
    speech(s, 1.0)
    (spec,) = fetches(delta(s, "item_u1", "how warm for quail", 1.5))
    assert fetches(final(s, "item_u1", "How warm for quail?", 1.52)) == []
    assert s.busy
    actions = s.on_context(spec, ctx("quail"), "ok", 9.0, 1.53)
    assert [e["type"] for e in upstream(actions)] == ["conversation.item.create", "response.create"]
    (context_event,) = [e for e in client(actions) if e["type"] == "parley.context"]
    assert context_event["speculative"] is True


def test_the_relays_own_items_and_their_errors_never_reach_the_client() -> None:
    s = make()
    speech(s, 1.0)
    (fin,) = fetches(final(s, "item_u1", "duck eggs", 2.0))
    create = upstream(s.on_context(fin, ctx("duck"), "ok", 6.0, 2.1))[0]
    item = create["item"]
    for type_ in ("conversation.item.added", "conversation.item.done"):
        assert s.on_upstream_text(ev(type_, item=item), 2.2) == []
    assert s.on_upstream_text(ev("conversation.item.deleted", item_id=item["id"]), 2.3) == []
    err = ev("error", error={"code": "item_not_found", "message": "no", "event_id": create["event_id"]})
    assert s.on_upstream_text(err, 2.4) == []
    other = ev("conversation.item.added", item={"id": "item_x", "role": "assistant", "content": []})
    assert s.on_upstream_text(other, 2.5) == [ToClient(other)]


def test_speculation_off_looks_up_only_at_speech_end() -> None:
    s = make(rag_speculative=False)
    speech(s, 1.0)
    assert fetches(delta(s, "item_u1", "duck eggs", 1.5)) == []
    assert len(fetches(final(s, "item_u1", "duck eggs", 2.0))) == 1


def test_follow_up_questions_carry_the_previous_one() -> None:
    assert is_follow_up("and for geese?") and is_follow_up("What about quail?")
    assert is_follow_up("how long does it take?")
    assert not is_follow_up("How long do goose eggs take to hatch at home?")
    prev = "How long do chicken eggs take to hatch?"
    assert build_query("and for geese?", prev) == "How long do chicken eggs take to hatch? and for geese?"
    assert build_query("What temperature for a brooder in week one?", prev).startswith("What")
    assert build_query("and for geese?", None) == "and for geese?"
    assert same_query("How long, do ducks take?", "how long do ducks take")
    s = make()
    speech(s, 1.0)
    final(s, "item_u1", "How long do chicken eggs take to hatch?", 2.0)
    (fin,) = fetches(final(s, "item_u2", "And for geese?", 5.0))
    assert fin.query == "How long do chicken eggs take to hatch? And for geese?"


def test_context_text_is_short_and_names_its_sources() -> None:
    long = Context([Passage("word " * 400, "/x/a.md", 0.9, title="Incubation", headings="Duck")])
    text = context_text(long, max_chars=200)
    assert "(from: Incubation > Duck)" in text and len(text) < 340 and "..." in text


def principal(**claims: Any) -> Principal:
    return Principal(user_id="u", claims={"sub": "u", **claims})


def test_knowledge_base_comes_from_the_token_and_cannot_be_widened() -> None:
    st = Settings(kb_default="default")
    assert kb_for(st, principal(), None) == "default"
    with pytest.raises(Forbidden):
        kb_for(st, principal(), "acme")
    assert kb_for(st, principal(parley_kb="acme"), None) == "acme"
    assert kb_for(st, principal(parley_kb=["acme", "beta"]), "beta") == "beta"
    with pytest.raises(Forbidden):
        kb_for(st, principal(parley_kb=["acme"]), "default")
    with pytest.raises(Forbidden):
        kb_for(st, principal(parley_kb="../etc"), None)


def test_a_turn_waiting_for_a_slow_speculative_lookup_is_held_to_its_time_box() -> None:
    s = make(context_timeout_s=0.15)
    speech(s, 1.0)
    (spec,) = fetches(delta(s, "item_u1", "how warm for quail", 1.5))
    assert fetches(final(s, "item_u1", "how warm for quail", 2.0)) == []
    assert s.deadline_moved and s.next_deadline() == pytest.approx(2.152)
    assert s.tick(2.1) == []
    actions = s.tick(2.152)
    assert [e["type"] for e in upstream(actions)] == ["response.create"]
    (context_event,) = client(actions)
    assert context_event["status"] == "timeout"
    # the lookup ends later: nothing is injected for the turn that has been answered
    assert upstream(s.on_context(spec, ctx("quail"), "ok", 400.0, 2.4)) == []


def test_a_pause_transcript_replaces_a_misheard_partial_and_later_deltas_start_nothing() -> None:
    s = make()
    speech(s, 1.0)
    (early,) = fetches(delta(s, "item_u1", "How long do you", 1.5))  # a mid-speech partial, misheard
    assert early.query == "How long do you"
    s.on_context(early, ctx("misc"), "ok", 5.0, 1.6)
    pause = ev("parley.pause_transcript", item_id="item_u1", text="How long do duck eggs take to hatch?")
    actions = s.on_upstream_text(pause, 2.0)
    assert client(actions) == []  # Parley's own signal from its local server: not the client's business
    (spec,) = fetches(actions)
    assert spec.query == "How long do duck eggs take to hatch?"
    assert fetches(delta(s, "item_u1", " more", 2.1)) == []  # deltas are mid-speech partials from now on
    s.on_context(spec, ctx("duck"), "ok", 5.0, 2.2)
    assert s.speculated == "How long do duck eggs take to hatch?"
    actions = final(s, "item_u1", "How long do duck eggs take to hatch?", 2.5)
    assert [e["type"] for e in upstream(actions)] == ["response.create"]


def test_a_long_passage_is_focused_on_the_sentence_that_matches_the_question() -> None:
    from parley.relay.context import focus

    text = (
        "Chicken eggs hatch in 21 days. Turkeys take 28 days. Geese need 28 to 34 days depending on the breed. "
        "Quail are quickest at 17 to 18 days. Guinea fowl hatch in 26 to 28 days. Muscovy ducks take 35 days."
    )
    out = focus(text, "how long for geese to hatch", max_chars=90)
    assert "Geese need 28 to 34 days" in out and len(out) <= 90 + 8
    assert out.startswith("... ") and out.endswith(" ...")
    assert focus("Short text.", "anything", 90) == "Short text."
    assert focus(text, "no shared words", 40).startswith("Chicken eggs hatch in 21 days.")


def test_nothing_found_makes_the_answer_decline_unless_it_is_small_talk() -> None:
    from parley.relay.context import is_small_talk

    assert is_small_talk("Hello, how are you?") and is_small_talk("thanks!")
    assert not is_small_talk("What's the price of a tractor?")
    from parley.relay.context import asks_for_facts

    assert asks_for_facts("what is the price of a tractor") and asks_for_facts("The weather tomorrow?")
    assert not asks_for_facts("Tell me a long story about a brave knight.") and not asks_for_facts("Hi!")
    for words, declines in [
        ("What's the price of a tractor?", True),
        ("Hello there!", False),
        ("Tell me a story about a knight.", False),  # a request, not a question for facts: answered freely
    ]:
        s = make()
        speech(s, 1.0)
        (fin,) = fetches(final(s, "item_u1", words, 2.0))
        (respond,) = upstream(s.on_context(fin, Context(best_score=0.1), "ok", 6.0, 2.01))  # no note injected
        if declines:
            instructions = respond["response"]["instructions"]
            assert instructions.startswith("Be brief.") and "documents do not cover it" in instructions
        else:
            assert "response" not in respond
    s = make(rag_decline=False)
    speech(s, 1.0)
    (fin,) = fetches(final(s, "item_u1", "What's the price of a tractor?", 2.0))
    assert "response" not in upstream(s.on_context(fin, Context(), "ok", 6.0, 2.01))[-1]
