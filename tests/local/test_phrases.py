"""PhraseSplitter: pure text tests."""

from __future__ import annotations

import pytest

from parley.local.phrases import PhraseSplitter, clean_for_speech


def split_stream(text: str, step: int = 3) -> list[str]:
    """Feed ``text`` in small deltas, like an LLM stream, then flush."""
    splitter = PhraseSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    return out + splitter.flush()


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_first_phrase_cut_at_clause_then_sentences(step: int) -> None:
    text = "Sure, the capital of France is Paris. It has about 2.1 million people! Anything else?"
    assert split_stream(text, step) == [
        "Sure,",
        "the capital of France is Paris.",
        "It has about 2.1 million people!",
        "Anything else?",
    ]


def test_first_phrase_cut_after_four_words_without_punctuation() -> None:
    phrases = split_stream("The capital of France is Paris and it is lovely in the spring. Yes.")
    assert phrases[0] == "The capital of France"
    assert phrases[1:] == ["is Paris and it is lovely in the spring.", "Yes."]


def test_later_phrases_keep_commas() -> None:
    phrases = split_stream("Hi. Well, if you ask me, it depends. Ok.")
    assert phrases == ["Hi.", "Well, if you ask me, it depends.", "Ok."]


def test_first_phrase_waits_until_the_delta_shows_a_boundary() -> None:
    splitter = PhraseSplitter()
    assert splitter.feed("It costs 3") == []
    assert splitter.feed(".") == []  # "3." might still become "3.5"
    assert splitter.feed("5") == []
    assert splitter.feed(" now, roughly") == ["It costs 3.5 now,"]
    assert splitter.flush() == ["roughly"]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith is here.",
        "Fruit, e.g. apples.",
        "Use i.e. this one.",
        "J. R. R. Tolkien wrote it.",
        "Pi is 3.14159 roughly.",
        "Version 2.0.1 is out.",
        "It is 10 a.m. now.",
    ],
)
def test_no_split_inside_numbers_and_abbreviations(text: str) -> None:
    splitter = PhraseSplitter()
    splitter._first = False  # only sentence rules apply from the second phrase on
    out = splitter.feed(text + " Next one is here. ")
    assert out == [text, "Next one is here."]


def test_newline_and_list_numbers() -> None:
    text = "Here you go:\n1. Paris is big.\n2. Lyon is smaller.\n"
    assert split_stream(text) == ["Here you go:", "1. Paris is big.", "2. Lyon is smaller."]


def test_long_sentence_is_cut_at_a_clause_or_a_space() -> None:
    splitter = PhraseSplitter()
    splitter.feed("Hello. ")
    words = " ".join(f"w{i}" for i in range(20))
    more = " ".join(f"x{i}" for i in range(20))
    out = splitter.feed(f"{words}, {more} ")
    assert out == [words + ","]
    rest = splitter.feed(" ".join(f"y{i}" for i in range(10)) + " ")
    assert len(rest) == 1 and len(rest[0].split()) == 25


def test_markdown_is_stripped() -> None:
    text = "## Answer\n**Paris** is the `capital`. * Lyon is *second*.\n"
    assert split_stream(text) == ["Answer", "Paris is the capital.", "Lyon is second."]
    assert clean_for_speech("**") == ""
    assert clean_for_speech("- item") == "item"


def test_flush_resets_first_phrase_rule() -> None:
    splitter = PhraseSplitter()
    assert splitter.feed("One. Two, three") == ["One."]
    assert splitter.flush() == ["Two, three"]
    assert splitter.feed("Again, yes") == ["Again,"]
    assert splitter.flush() == ["yes"]
    assert splitter.flush() == []


def test_question_marks_and_quotes() -> None:
    assert split_stream('Ok. He said "stop!" and left. Why?! Fine') == [
        "Ok.",
        'He said "stop!"',
        "and left.",
        "Why?!",
        "Fine",
    ]
