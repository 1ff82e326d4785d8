"""Chunking: heading paths, sentence splitting, size bounds, one-sentence overlap, stable ids, passage text."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.rag.chunking import (
    ChunkConfig,
    chunk_document,
    chunk_id,
    passage_text,
    split_sentences,
    word_count,
)
from parley.rag.loaders import ParsedDocument, Section


def _doc(*sections: Section, title: str = "Guide") -> ParsedDocument:
    return ParsedDocument(path=Path("/kb/guide.md"), title=title, sections=sections, digest="d" * 64)


def _sentences(n: int, words: int = 12, tag: str = "s") -> list[str]:
    """Distinct sentences of ``words`` words each: "S0 w1 w2 ... ."."""
    return [f"{tag.upper()}{i} " + " ".join(f"w{i}x{j}" for j in range(1, words)) + "." for i in range(n)]


def test_sentences_split_on_punctuation_but_not_on_decimals_or_abbreviations() -> None:
    text = "Keep eggs at 37.5 °C. Turn them, e.g. three times a day! Is it day 18? Yes. Dr. Okafor agrees."
    assert split_sentences(text) == [
        "Keep eggs at 37.5 °C.",
        "Turn them, e.g. three times a day!",
        "Is it day 18?",
        "Yes.",
        "Dr. Okafor agrees.",
    ]


def test_sentences_in_scripts_without_spaces() -> None:
    assert split_sentences("鸡蛋需要二十一天。鸭蛋需要二十八天。") == [
        "鸡蛋需要二十一天。",
        "鸭蛋需要二十八天。",
    ]


def test_a_short_section_is_one_chunk_with_its_heading_path() -> None:
    doc = _doc(
        Section((), "An introduction."),
        Section(("Incubation", "Duck"), "Duck eggs take 28 days.\nMist them daily."),
    )
    chunks = chunk_document(doc, kb="farm", source="/kb/guide.md").chunks
    assert [(c.headings, c.text, c.ordinal) for c in chunks] == [
        ((), "An introduction.", 0),
        (("Incubation", "Duck"), "Duck eggs take 28 days.\nMist them daily.", 1),
    ]
    assert chunks[1].heading_path == "Incubation > Duck"
    assert all(c.title == "Guide" and c.source == "/kb/guide.md" for c in chunks)


def test_long_sections_split_within_bounds_with_one_sentence_overlap() -> None:
    config = ChunkConfig(max_words=60, min_words=10)
    sentences = _sentences(20)  # 240 words
    doc = _doc(Section(("Long",), " ".join(sentences)))
    chunks = chunk_document(doc, kb="farm", source="s", config=config).chunks
    assert len(chunks) >= 4
    assert all(word_count(c.text) <= config.max_words for c in chunks)
    assert all(c.headings == ("Long",) for c in chunks)
    pieces = [split_sentences(c.text) for c in chunks]
    for before, after in zip(pieces, pieces[1:], strict=False):
        assert after[0] == before[-1]  # the overlap: exactly the last sentence of the chunk before
        assert after[1] not in before
    # Every sentence appears, in order, once the overlaps are removed.
    assert pieces[0] + [s for p in pieces[1:] for s in p[1:]] == sentences


def test_no_overlap_across_sections_and_pieces_are_even() -> None:
    config = ChunkConfig(max_words=100, min_words=20)
    doc = _doc(
        Section(("A",), " ".join(_sentences(10, tag="a"))),  # 120 words: two pieces of ~60, not 100 + 20
        Section(("B",), " ".join(_sentences(3, tag="b"))),
    )
    chunks = chunk_document(doc, kb="farm", source="s", config=config).chunks
    a = [c for c in chunks if c.headings == ("A",)]
    b = [c for c in chunks if c.headings == ("B",)]
    assert len(a) == 2 and len(b) == 1
    assert all(40 <= word_count(c.text) <= 80 for c in a)
    assert b[0].text.startswith("B0")


def test_block_boundaries_are_kept_as_line_breaks() -> None:
    doc = _doc(Section(("Rows",), "Species: Duck; Days: 28.\nSpecies: Goose; Days: 30.\nA note. Another."))
    (chunk,) = chunk_document(doc, kb="farm", source="s").chunks
    assert chunk.text == "Species: Duck; Days: 28.\nSpecies: Goose; Days: 30.\nA note. Another."


def test_an_overlong_sentence_is_cut_at_word_boundaries() -> None:
    config = ChunkConfig(max_words=50, min_words=10)
    words = [f"word{i}" for i in range(175)]
    chunks = chunk_document(_doc(Section((), " ".join(words))), kb="k", source="s", config=config).chunks
    assert all(word_count(c.text) <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == words  # no overlap for pieces of one sentence


def test_unicode_text_without_spaces_is_bounded_too() -> None:
    config = ChunkConfig(max_words=40, min_words=5)
    text = "鸡" * 500  # one "sentence", no spaces, no punctuation
    chunks = chunk_document(_doc(Section(("中文",), text)), kb="k", source="s", config=config).chunks
    assert len(chunks) > 1
    assert all(word_count(c.text) <= 40 for c in chunks)
    assert "".join(c.text for c in chunks) == text
    accents = chunk_document(_doc(Section(("Œufs",), "Les œufs éclosent à 21 jours.")), kb="k", source="s")
    assert accents.chunks[0].text == "Les œufs éclosent à 21 jours."


def test_ids_are_stable_and_depend_on_kb_source_position_and_text() -> None:
    doc = _doc(Section(("A",), " ".join(_sentences(30))))
    first = chunk_document(doc, kb="farm", source="/kb/guide.md")
    again = chunk_document(doc, kb="farm", source="/kb/guide.md")
    assert [c.id for c in first.chunks] == [c.id for c in again.chunks]
    assert len({c.id for c in first.chunks}) == len(first.chunks)
    other_kb = chunk_document(doc, kb="other", source="/kb/guide.md")
    other_source = chunk_document(doc, kb="farm", source="/kb/other.md")
    assert not {c.id for c in first.chunks} & {c.id for c in other_kb.chunks}
    assert not {c.id for c in first.chunks} & {c.id for c in other_source.chunks}
    assert chunk_id("farm", "s", 0, "text") != chunk_id("farm", "s", 1, "text")
    assert len(first.chunks[0].id) == 32
    assert first.digest == doc.digest and first.title == "Guide"


def test_passage_text_puts_title_and_heading_path_first() -> None:
    doc = _doc(Section(("Incubation", "Duck"), "Duck eggs take 28 days."), Section((), "Intro."))
    duck, intro = chunk_document(doc, kb="k", source="s").chunks
    assert passage_text(duck) == "Guide > Incubation > Duck: Duck eggs take 28 days."
    assert passage_text(intro) == "Guide: Intro."


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéœ鸡", min_size=1, max_size=12)
_sentence = st.lists(_word, min_size=1, max_size=70).map(lambda ws: " ".join(ws).capitalize() + ".")
_block = st.lists(_sentence, min_size=1, max_size=8).map(" ".join)
_section = st.lists(_block, min_size=1, max_size=5).map("\n".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(_section, min_size=1, max_size=4), st.integers(min_value=20, max_value=150))
def test_any_text_is_chunked_within_bounds_and_loses_no_words(texts: list[str], max_words: int) -> None:
    config = ChunkConfig(max_words=max_words, min_words=max_words // 4)
    doc = _doc(*(Section((f"H{i}",), t) for i, t in enumerate(texts)))
    chunks = chunk_document(doc, kb="k", source="s", config=config).chunks
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(word_count(c.text) <= max_words for c in chunks)
    for i, text in enumerate(texts):
        mine = " ".join(c.text for c in chunks if c.headings == (f"H{i}",)).split()
        assert set(mine) == set(text.split())  # every word kept (overlaps repeat some)
