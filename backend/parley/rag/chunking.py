"""Parsed documents -> chunks: along headings, then blocks and sentences, to short focused passages.

A voice turn injects only the best one or two passages, cut to ``rag_max_passage_chars`` (600 by default, ~100
words), and MiniLM was trained on inputs of 128 word pieces: so chunks aim at ~60-120 words, never more than
``max_words`` (a longer sentence is cut at word boundaries). Consecutive chunks of one section share one sentence,
so a fact on a boundary is whole in at least one of them. ``Chunk.text`` is the body only; ``passage_text`` builds
the embedding input with the title and heading path in front ("Incubation > Duck > Humidity: ..."), a cheap form of
contextual retrieval.

Ids are stable: ``sha256(kb, source, ordinal, text)``, so re-ingesting the same content gives the same ids.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from parley.rag.loaders import ParsedDocument, Section
from parley.rag.types import Chunk, Document


@dataclass(frozen=True, slots=True)
class ChunkConfig:
    max_words: int = 120  # hard bound of a chunk (overlap included)
    min_words: int = 30  # a last piece smaller than this joins the one before when that stays in bounds
    overlap_max_words: int = 40  # a longer last sentence is not repeated in the next chunk


DEFAULT_CONFIG = ChunkConfig()


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str
    size: int
    new_block: bool  # starts a block (paragraph, list item, table row): joined with a line break


def chunk_document(
    doc: ParsedDocument, *, kb: str, source: str, config: ChunkConfig = DEFAULT_CONFIG
) -> Document:
    chunks: list[Chunk] = []
    for section in doc.sections:
        for text in _chunk_section(section, config):
            ordinal = len(chunks)
            chunks.append(
                Chunk(
                    id=chunk_id(kb, source, ordinal, text),
                    source=source,
                    title=doc.title,
                    headings=section.headings,
                    text=text,
                    ordinal=ordinal,
                )
            )
    return Document(source=source, title=doc.title, digest=doc.digest, chunks=tuple(chunks))


def chunk_id(kb: str, source: str, ordinal: int, text: str) -> str:
    key = "\x1f".join((kb, source, str(ordinal), text))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def passage_text(chunk: Chunk) -> str:
    """What is embedded for a chunk: "title > heading > subheading: text"."""
    prefix = " > ".join(p for p in (chunk.title, *chunk.headings) if p)
    return f"{prefix}: {chunk.text}" if prefix else chunk.text


# --- sizes and sentences -------------------------------------------------------------------------------------

_WIDE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words; a run of a script written without spaces (CJK) counts one word per two characters. Additive over
    whitespace-separated tokens, so a chunk's size is the sum of its sentences' sizes."""
    return sum(1 + len(_WIDE.findall(token)) // 2 for token in text.split())


_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？]+[”’」』)]*\s*")
_NEXT_STARTS = re.compile(r"[\"'“‘(\[]?[^\W_a-z]")  # uppercase, a digit or a non-Latin letter
_ABBREVIATIONS = frozenset(("e.g", "i.e", "approx", "vs", "mr", "mrs", "ms", "dr", "fig", "cf", "ca", "incl"))


def split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for m in _END.finditer(text):
        end = m.end()
        if end >= len(text):
            break
        if m.group().strip()[0] in ".!?…":
            if not _NEXT_STARTS.match(text, end):
                continue
            before = text[start : m.start()].split()
            last = before[-1].lower().rstrip(".") if before else ""
            if m.group().startswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
                continue
        sentences.append(text[start:end].strip())
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


def _hard_split(text: str, max_words: int) -> Iterator[str]:
    """A sentence longer than ``max_words`` in pieces at word boundaries (or characters, for CJK runs)."""
    step = max(2, (max_words - 1) * 2)  # a piece of this many CJK characters counts max_words
    tokens: list[str] = []
    for word in text.split():
        if len(word) > step:  # a run without spaces (CJK text, a URL): cut by characters
            tokens.extend(word[i : i + step] for i in range(0, len(word), step))
        else:
            tokens.append(word)
    piece: list[str] = []
    size = 0
    for token in tokens:
        n = max(1, word_count(token))
        if piece and size + n > max_words:
            yield " ".join(piece)
            piece, size = [], 0
        piece.append(token)
        size += n
    if piece:
        yield " ".join(piece)


def _units(section: Section, max_words: int) -> list[_Unit]:
    units = []
    for block in section.text.split("\n"):
        first = True
        for sentence in split_sentences(block.strip()):
            for piece in _hard_split(sentence, max_words) if word_count(sentence) > max_words else [sentence]:
                units.append(_Unit(piece, max(1, word_count(piece)), first))
                first = False
    return units


# --- packing -------------------------------------------------------------------------------------------------


def _join(units: list[_Unit]) -> str:
    out = units[0].text
    for u in units[1:]:
        out += ("\n" if u.new_block else " ") + u.text
    return out


def _chunk_section(section: Section, config: ChunkConfig) -> list[str]:
    units = _units(section, config.max_words)
    if not units:
        return []
    total = sum(u.size for u in units)
    if total <= config.max_words:
        return [_join(units)]
    target = total / math.ceil(total / config.max_words)  # even pieces, not one full and one crumb
    pieces: list[list[_Unit]] = []
    current: list[_Unit] = []
    size = 0
    fresh = 0  # size of what this chunk adds beyond the overlap
    overlapped = False  # current[0] repeats the last sentence of the chunk before
    for unit in units:
        boundary = unit.new_block and fresh >= 0.7 * target
        if current and fresh and (size + unit.size > config.max_words or fresh >= target or boundary):
            pieces.append(current)
            last = current[-1]
            overlap = last.size <= config.overlap_max_words and len(current) > 1
            overlapped = overlap and last.size + unit.size <= config.max_words
            current = [_Unit(last.text, last.size, True)] if overlapped else []
            size = last.size if overlapped else 0
            fresh = 0
        current.append(unit)
        size += unit.size
        fresh += unit.size
    if pieces and fresh < config.min_words:
        tail = current[1:] if overlapped else current
        if sum(u.size for u in pieces[-1]) + sum(u.size for u in tail) <= config.max_words:
            pieces[-1] = pieces[-1] + tail
            current = []
    if current:
        pieces.append(current)
    return [_join(p) for p in pieces]
