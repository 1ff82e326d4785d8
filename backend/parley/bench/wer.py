"""Word error rate, on text normalised the same way on both sides.

Normalising: lower case; apostrophes and hyphens split words (``l'heure`` -> ``l heure``, ``peut-être`` -> ``peut
être``); other punctuation dropped; whole numbers 0-999 written out in the clip's language (Whisper writes "10"
where a prompt says "ten"); spelled capitals joined (``M G C P`` -> ``mgcp``); accents kept (in French they tell words apart).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_SPLIT = re.compile(r"['’`\-‐–—/]")
_DROP = re.compile(r"[^\w\s]")
_NUMBER = re.compile(r"\d+")
_SPELLED = re.compile(r"\b([A-Z])[.\-]?\s?(?=[A-Z]\b)")  # "M G C P", "M-G-C-P", "M.G.C.P." -> "MGCP"

_EN_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
)
_EN_UNITS += "seventeen eighteen nineteen"
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety"
_FR_UNITS = (
    "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize dix-sept "
)
_FR_UNITS += "dix-huit dix-neuf"
_FR_TENS = "_ _ vingt trente quarante cinquante soixante soixante quatre-vingt quatre-vingt"
_DE_UNITS = "null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn vierzehn fünfzehn "
_DE_UNITS += "sechzehn siebzehn achtzehn neunzehn"
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig"


def _en(n: int) -> str:
    units, tens = _EN_UNITS.split(), _EN_TENS.split()
    if n < 20:
        return units[n]
    if n < 100:
        return tens[n // 10] + ("" if n % 10 == 0 else " " + units[n % 10])
    return units[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + _en(n % 100))


def _fr(n: int) -> str:
    units, tens = _FR_UNITS.split(), _FR_TENS.split()
    if n < 20:
        return units[n]
    if n < 100:
        t, u = divmod(n, 10)
        if t in (7, 9):  # soixante-dix .. quatre-vingt-dix-neuf
            return tens[t] + " " + units[10 + u]
        if u == 0:
            return tens[t] + ("s" if t == 8 else "")
        return tens[t] + (" et un" if u == 1 and t != 8 else " " + units[u])
    head = "cent" if n // 100 == 1 else units[n // 100] + " cent"
    return head + ("" if n % 100 == 0 else " " + _fr(n % 100))


def _de(n: int) -> str:
    units, tens = _DE_UNITS.split(), _DE_TENS.split()
    if n < 20:
        return units[n]
    if n < 100:
        t, u = divmod(n, 10)
        return tens[t] if u == 0 else ("ein" if u == 1 else units[u]) + "und" + tens[t]
    head = "einhundert" if n // 100 == 1 else units[n // 100] + "hundert"
    return head + ("" if n % 100 == 0 else _de(n % 100))


_SPELL = {"en": _en, "fr": _fr, "de": _de}


def number_words(n: int, language: str) -> str:
    """``n`` (0-999) in words in ``language`` (en, fr, de); other numbers and languages stay digits."""
    spell = _SPELL.get(language)
    return spell(n) if spell is not None and 0 <= n < 1000 else str(n)


def normalise(text: str, language: str) -> list[str]:
    text = _SPELLED.sub(r"\1", unicodedata.normalize("NFC", text)).lower()
    text = _NUMBER.sub(lambda m: " " + number_words(int(m.group()), language) + " ", text)
    text = _SPLIT.sub(" ", text)
    return _DROP.sub(" ", text).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions, insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class Score:
    errors: int
    words: int

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0


def score(reference: str, hypothesis: str, language: str) -> Score:
    ref = normalise(reference, language)
    return Score(edit_distance(ref, normalise(hypothesis, language)), len(ref))


def corpus_wer(scores: Sequence[Score]) -> float:
    """All the errors over all the reference words (not the mean of per-clip rates)."""
    words = sum(s.words for s in scores)
    return sum(s.errors for s in scores) / words if words else float("nan")
