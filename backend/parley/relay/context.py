"""The context hook: what the relay asks for when a user turn ends (or, speculatively, while the user pauses),
before it asks the upstream to answer.

``ContextProvider`` is the seam; ``parley.rag.retriever.Retriever`` fills it with the knowledge base, ``NoContext``
finds nothing (RAG off). The relay time-boxes every call (``settings.context_timeout_ms``); a slow or failing
provider makes the turn proceed without context. The pure helpers here decide what the upstream is told:
``build_query`` (the question, plus the previous one for a follow-up) and ``context_text`` (the system item).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Passage:
    text: str
    source: str
    score: float = 0.0  # cosine similarity to the query (absolute, comparable across queries)
    title: str = ""
    headings: str = ""  # heading path inside the document
    chunk_id: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    """What a lookup found. ``searched`` is False when the provider does not search at all (RAG off). With
    ``searched`` and no passages, nothing in the knowledge base was close enough. Either way nothing is injected
    (a note would only be read out by a small model); the relay may tell the answer to decline instead."""

    passages: list[Passage] = field(default_factory=list)
    searched: bool = True
    best_score: float | None = (
        None  # the best similarity seen, even below the floor (for the client and logs)
    )

    @property
    def sources(self) -> list[str]:
        """Distinct sources, best first."""
        return list(dict.fromkeys(p.source for p in self.passages))

    @property
    def key(self) -> tuple[str, ...]:
        """What the injected item depends on: two lookups with the same key inject the same text; () = no item."""
        if not self.searched:
            return ()
        return tuple(p.chunk_id or f"{p.source}#{hash(p.text)}" for p in self.passages)


@runtime_checkable
class ContextProvider(Protocol):
    async def retrieve(self, query: str, *, session_id: str, kb: str) -> Context: ...

    async def ready(self) -> bool:
        """True once the provider can answer (models loaded, store reachable); used by ``/readyz``."""
        ...


class NoContext:
    """RAG off: never any context, and nothing is injected."""

    async def retrieve(self, query: str, *, session_id: str, kb: str) -> Context:
        return Context(searched=False)

    async def ready(self) -> bool:
        return True


# --- queries ----------------------------------------------------------------------------------------------

_FOLLOW_UP_OPENERS = ("and ", "what about", "how about", "also ", "but ", "what of", "same for", "then ")
_BACK_REFERENCES = frozenset(
    {"it", "its", "it's", "they", "them", "their", "those", "these", "that", "this", "there", "he", "she"}
)
_WORD = re.compile(r"[\w']+")


def is_follow_up(question: str) -> bool:
    """A question that leans on the previous one ("and for geese?", "how long does it take?")."""
    q = question.strip().lower()
    words = _WORD.findall(q)
    if not words:
        return False
    if q.startswith(_FOLLOW_UP_OPENERS) or len(words) <= 3:
        return True
    return len(words) <= 8 and any(w in _BACK_REFERENCES for w in words)


def build_query(question: str, previous: str | None) -> str:
    """The search query for a user turn: the question, with the previous question before it when it is a
    follow-up (so "and for geese?" searches "how long do chicken eggs take to hatch? and for geese?")."""
    question = " ".join(question.split())
    if previous and is_follow_up(question):
        return f"{' '.join(previous.split())} {question}"
    return question


def same_query(a: str, b: str) -> bool:
    """Equal up to case, spacing and punctuation (a partial transcript vs the final one)."""
    return _WORD.findall(a.lower()) == _WORD.findall(b.lower())


# --- the injected item ------------------------------------------------------------------------------------


def context_text(context: Context, *, max_chars: int = 600, query: str = "") -> str:
    """The system item the relay injects: short (every token costs prompt time on a CPU model), each passage
    focused on the sentences that share the most words with the query, the sources named."""
    lines = ["Facts from the knowledge base for the user's last message; answer from them:"]
    for p in context.passages:
        where = " > ".join(x for x in (p.title, p.headings) if x) or display_source(p.source)
        lines.append(f"- {focus(p.text, query, max_chars)} (from: {where})")
    return "\n".join(lines)


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "that",
        "the",
        "this",
        "to",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _stems(text: str) -> set[str]:
    out = set()
    for w in _WORD.findall(text.lower()):
        if w in _STOP or (len(w) < 3 and not w.isdigit()):
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(w) > len(suffix) + 2 and w.endswith(suffix):
                w = w[: -len(suffix)]
                break
        out.add(w)
    return out


def focus(text: str, query: str, max_chars: int) -> str:
    """At most ``max_chars`` of ``text``: the sentence sharing the most words with ``query`` (rarer words count
    more; the first sentence when none shares any), then its neighbours, following ones first, in order."""
    text = text.strip()
    if len(" ".join(text.split())) <= max_chars:
        return " ".join(text.split())
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(text) if s.strip()]
    wanted = _stems(query)
    stems = [_stems(s) for s in sentences]
    # a word of the question found in few sentences says more about which one answers it
    df = {w: sum(1 for st in stems if w in st) for w in wanted}
    scores = [sum(1.0 / df[w] for w in wanted & st) for st in stems]
    best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
    lo = hi = best
    used = len(sentences[best])
    while True:
        grew = False
        for j in (hi + 1, lo - 1):
            if 0 <= j < len(sentences) and used + 1 + len(sentences[j]) <= max_chars:
                used += 1 + len(sentences[j])
                lo, hi = min(lo, j), max(hi, j)
                grew = True
                break
        if not grew:
            break
    picked = " ".join(sentences[lo : hi + 1])
    if len(picked) > max_chars:  # one very long sentence
        cut = picked.rfind(" ", 0, max_chars)
        picked = picked[: cut if cut > 0 else max_chars] + " ..."
    return ("... " if lo > 0 else "") + picked + (" ..." if hi < len(sentences) - 1 else "")


# --- when the knowledge base has nothing ------------------------------------------------------------------

DECLINE = (
    "The knowledge base has nothing on the user's last message. Reply with one short sentence saying that your "
    "documents do not cover it. Do not answer it from memory and do not guess."
)
_SMALL_TALK = re.compile(
    r"^(hi|hello|hey|good (morning|afternoon|evening|night)|thanks?|thank you|bye|goodbye|see you|ok(ay)?|yes|no|"
    r"how are you|who are you|what('s| is) your name|what can you do|nice to meet you)\b",
    re.I,
)


_QUESTION_START = re.compile(
    r"^(what|what's|whats|when|where|who|whom|whose|which|why|how|is|are|was|were|do|does|did|can|could|should|"
    r"would|will|has|have|had|tell me (what|when|where|who|which|why|how|if|whether)|any ?one know)\b",
    re.I,
)


def asks_for_facts(message: str) -> bool:
    """A question for information (the kind the documents should answer), not a request such as "tell me a
    story" or small talk: only such a message is declined when the knowledge base has nothing on it."""
    text = message.strip()
    if not text or is_small_talk(text):
        return False
    return text.endswith("?") or _QUESTION_START.match(" ".join(_WORD.findall(text))) is not None


def is_small_talk(message: str) -> bool:
    """A greeting, thanks or a question about the assistant itself: answered without the documents."""
    words = _WORD.findall(message)
    return bool(words) and len(words) <= 8 and _SMALL_TALK.match(" ".join(words)) is not None


def snippet(text: str, max_chars: int = 160) -> str:
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > 0 else max_chars] + " ..."


def display_source(source: str) -> str:
    """What a client is shown of a source: a URL as it is, a file by its name (not the server's directories)."""
    if "://" in source:
        return source
    return source.replace("\\", "/").rsplit("/", 1)[-1]
