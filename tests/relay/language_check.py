"""Which language a short answer is written in, from its function words: the small words every sentence needs
(articles, pronouns, auxiliaries), which a model writing in another language does not use. Words that two of the
languages share ("in", "die", "an", "so", "on", "was", "will", "du", "des", "es", "am", "son") are left out."""

from __future__ import annotations

import re
from collections import Counter


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


FUNCTION_WORDS = {
    "en": _words(
        "the and is are you your to of for that this with it not can i we they what which be have has please "
        "there their would at by from into about our my"
    ),
    "fr": _words(
        "le la les de un une et est sont vous votre vos je nous pour dans que qui pas ce cette ces sur avec "
        "ne au aux mais il elle ou être avez pouvez peut par chez se sa ses mon ma mes leur y à"
    ),
    "de": _words(
        "der das und ist sind nicht sie ich ein eine einen zu mit den dem auf für von wir bitte ihr ihre "
        "können kann im wie ihnen sich auch durch nach bei aus über unter zum zur um dein deine mein meine"
    ),
}
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def function_words(text: str) -> Counter[str]:
    """How many function words of each language ``text`` holds (French elisions "l'", "d'" count as French)."""
    counts: Counter[str] = Counter({lang: 0 for lang in FUNCTION_WORDS})
    for word in _WORD.findall(text.lower()):
        head, _, tail = word.replace("’", "'").partition("'")
        if tail and head in ("l", "d", "j", "n", "qu", "c", "s", "m", "t"):
            counts["fr"] += 1
            word = tail
        for lang, words in FUNCTION_WORDS.items():
            if word in words:
                counts[lang] += 1
    return counts


def written_in(text: str, language: str) -> bool:
    """At least two of ``language``'s function words (a short answer such as 'Dans le dossier "Messages"' has two),
    and at least three times as many as of any other language."""
    counts = function_words(text)
    mine = counts[language]
    others = max(n for lang, n in counts.items() if lang != language)
    return mine >= 2 and mine >= 3 * others
