"""``parley bench stt``: the WER arithmetic, and one small real run on French recordings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley.bench.wer import Score, corpus_wer, edit_distance, normalise, score
from parley.settings import Settings


@pytest.mark.parametrize(
    ("text", "language", "words"),
    [
        ("Press 1, then 105.", "en", "press one then one hundred five"),
        ("Appuyez sur 4 ou 6, puis 80.", "fr", "appuyez sur quatre ou six puis quatre vingts"),
        ("L'heure: peut-être 21 h", "fr", "l heure peut être vingt et un h"),
        ("Um 21 Uhr, nicht 17!", "de", "um einundzwanzig uhr nicht siebzehn"),
        ("M G C P", "fr", "mgcp"),
        ("Cet Agent — Présent…", "fr", "cet agent présent"),
    ],
)
def test_normalise(text: str, language: str, words: str) -> None:
    assert normalise(text, language) == words.split()


def test_word_error_rate() -> None:
    assert edit_distance(["a", "b", "c", "d"], ["a", "x", "c"]) == 2  # one substitution, one deletion
    assert edit_distance([], ["a", "b"]) == 2
    assert score("Composez le 1.", "composez le un", "fr") == Score(0, 3)
    assert score("the cat sat on the mat", "the cat sat mat", "en") == Score(2, 6)
    assert corpus_wer([Score(1, 4), Score(0, 6)]) == pytest.approx(
        0.1
    )  # errors over words, not a mean of rates


async def test_no_recordings_is_a_clear_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from parley.bench.stt import run_stt_bench

    monkeypatch.setenv("PARLEY_SPEECH_DIR", str(tmp_path / "empty"))
    assert await run_stt_bench(Settings(), languages=["fr"], max_clips=1, out=str(tmp_path / "out")) == 2


@pytest.mark.models
async def test_a_small_real_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speech_recordings: None
) -> None:
    """Two French prompts through base with both windows: the JSON, the plot and the docs section."""
    from parley.bench.stt import run_stt_bench

    monkeypatch.chdir(tmp_path)  # the section goes to ./docs/benchmarks.md
    assert await run_stt_bench(Settings(), languages=["fr"], max_clips=2, out="docs/benchmarks") == 0
    _check_outputs()


def _check_outputs() -> None:
    result = json.loads(Path("docs/benchmarks/stt.json").read_text())
    rows = {row["option"]: row for row in result["rows"]}
    assert set(rows) == {"base, short window", "base, full window"}  # tiny.en is English only
    for row in rows.values():
        assert row["language"] == "fr" and row["human"] and row["clips"] == 2 and row["speakers"] == ["June"]
        assert 0.0 <= row["wer"] < 0.6 and 0 < row["p50_ms"] <= row["p95_ms"]
        assert all(clip["heard"] and clip["words"] >= 4 for clip in row["detail"])
    assert result["chosen"]["fr"] in rows
    assert Path("docs/benchmarks/stt.png").stat().st_size > 10_000
    doc = Path("docs/benchmarks.md").read_text()
    assert "<!-- bench:stt -->" in doc and "| base, short window | fr | human | 2 | June " in doc
