"""Cut a streaming LLM answer into phrases that text-to-speech can start on.

Pure text logic, no I/O. ``feed`` takes each text delta and returns the phrases it completed; ``flush`` returns the
rest at the end of the answer.

For a low time to first audio the first phrase is cut early: at a clause boundary (``, ; : —``) or, failing that,
after four words (Piper's time to the first audio grows with the phrase: about 25-30 ms a word on these 2 cores,
and four words already give ~1.4 s of speech to cover the synthesis of the next phrase). Later phrases are cut at sentence ends (``. ! ?`` or a newline) or, when a sentence runs
long (~25 words), at its last clause boundary or at a space. A full stop inside a number (``3.5``), after a known
abbreviation (``e.g.``, ``Dr.``) or after a list number (``1.``) is not a sentence end. Markdown marks that a voice
would read out (``*``, ``#``, backticks) are removed.
"""

from __future__ import annotations

import re

FIRST_PHRASE_WORDS = 4
MAX_PHRASE_WORDS = 25

_SENTENCE_END = ".!?"
_CLAUSE_END = ",;:"
_DASHES = "—–"
_CLOSERS = "\"')]}»”’"
_ABBREVIATIONS = frozenset(
    {
        *(
            "mr",
            "mrs",
            "ms",
            "dr",
            "prof",
            "sr",
            "jr",
            "st",
            "vs",
            "etc",
            "approx",
            "dept",
            "fig",
            "inc",
            "ltd",
        ),
        *("corp", "vol", "mt", "ave", "jan", "feb", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov"),
        *("e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "cf", "al"),
    }
)
_MARKDOWN = re.compile(r"[*#`]+|^[ \t]*[-+>|][ \t]+", re.MULTILINE)
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\S+(?=\s)")


def clean_for_speech(text: str) -> str:
    """Drop markdown marks and collapse whitespace. Returns "" when nothing speakable is left."""
    text = _SPACES.sub(" ", _MARKDOWN.sub("", text)).strip()
    return text if any(ch.isalnum() for ch in text) else ""


def _is_abbreviation(buf: str, dot: int, phrase_start: int) -> bool:
    """Is the "." at ``dot`` part of an abbreviation, an initial or a list number rather than a sentence end?"""
    start = dot
    while start > phrase_start and not buf[start - 1].isspace():
        start -= 1
    token = buf[start:dot].lstrip("\"'([{*_`").lower()
    if not token:
        return False
    if token in _ABBREVIATIONS:
        return True
    if len(token) == 1 and token.isalpha():  # an initial: "J. R. R. Tolkien"
        return True
    if "." in token and all(part.isalpha() and len(part) <= 2 for part in token.split(".")):
        return True  # "e.g", "u.s.a"
    # A list number at the very start of a phrase: "1. First item".
    return token.isdigit() and not buf[phrase_start:start].strip(" \n*#-")


def _punctuation_cut(buf: str, *, first: bool) -> int | None:
    """End index (exclusive) of the first phrase closed by punctuation, or None if none is complete yet."""
    n = len(buf)
    for i, ch in enumerate(buf):
        if ch == "\n":
            return i + 1
        if ch in _DASHES and first:
            return i + 1
        if ch in _SENTENCE_END or (first and ch in _CLAUSE_END):
            j = i + 1
            while j < n and (buf[j] in _CLOSERS or (ch in _SENTENCE_END and buf[j] in _SENTENCE_END)):
                j += 1
            if j >= n:
                return None  # cannot tell yet ("3." might become "3.5")
            if not buf[j].isspace():
                continue
            if ch == "." and _is_abbreviation(buf, i, 0):
                continue
            return j
    return None


def _word_cut(buf: str, *, first: bool) -> int | None:
    """End index of a phrase cut for length, or None while the buffer is short enough."""
    limit = FIRST_PHRASE_WORDS if first else MAX_PHRASE_WORDS
    words = list(_WORD.finditer(buf))
    if len(words) < limit:
        return None
    if not first:
        # Prefer the last clause boundary inside the long run.
        for word in reversed(words[: limit - 1]):
            if word.group()[-1] in _CLAUSE_END + _DASHES:
                return word.end()
    return words[limit - 1].end()


class PhraseSplitter:
    """Stateful splitter for one answer. Reusable: ``flush`` starts over with a fresh "first phrase"."""

    def __init__(self) -> None:
        self._buf = ""
        self._first = True

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            found = (_punctuation_cut(self._buf, first=self._first), _word_cut(self._buf, first=self._first))
            cuts = [c for c in found if c]
            if not cuts:
                return out
            cut = min(cuts)
            phrase, self._buf = clean_for_speech(self._buf[:cut]), self._buf[cut:].lstrip()
            if phrase:
                out.append(phrase)
                self._first = False

    def flush(self) -> list[str]:
        phrase = clean_for_speech(self._buf)
        self._buf = ""
        self._first = True
        return [phrase] if phrase else []
