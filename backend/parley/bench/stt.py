"""``parley bench stt``: word error rate and latency per language for each packaged speech-to-text option, on real
human recordings with transcripts (``speech_corpus``; fetch them first with ``scripts/fetch-speech.sh``).

Options: tiny.en (English only) and the multilingual base, each with Whisper's full 30 s encoder window and with
the short window the server uses for utterances under 29 s (``PARLEY_STT_WINDOW_MIN_S``, 10 s). Each clip is
transcribed once, after one untimed warm-up call per option, with the language given (as a session does); the
latency is the transcription call alone (audio already at 16 kHz). German has no human recording here: its rows
are measured on synthetic voices that are not the assistant's (Pico, espeak-ng) and marked so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parley.bench import speech_corpus
from parley.bench.report import md_table, percentile, write_section
from parley.bench.speech_corpus import Clip
from parley.bench.wer import Score, corpus_wer, score
from parley.settings import Settings

logger = logging.getLogger(__name__)

SHORT_WINDOW_S = 10.0
FULL_WINDOW_S = 30.0
# Speech to text runs after the user stops speaking, on the critical path of every turn (and again for each partial
# transcript while they speak): an option whose median exceeds this is too slow for a voice turn on these cores.
LATENCY_BUDGET_MS = 300.0


@dataclass(frozen=True)
class Option:
    name: str
    model: str
    window_s: float
    languages: tuple[str, ...]


OPTIONS = (
    Option("tiny.en, short window", "tiny.en", SHORT_WINDOW_S, ("en",)),
    Option("tiny.en, full window", "tiny.en", FULL_WINDOW_S, ("en",)),
    Option("base, short window", "base", SHORT_WINDOW_S, ("en", "fr", "de")),
    Option("base, full window", "base", FULL_WINDOW_S, ("en", "fr", "de")),
)


@dataclass
class ClipResult:
    corpus: str
    speaker: str
    name: str
    seconds: float
    reference: str
    heard: str
    errors: int
    words: int
    ms: float


@dataclass
class Row:
    option: str
    language: str
    human: bool
    clips: list[ClipResult] = field(default_factory=list)

    @property
    def wer(self) -> float:
        return corpus_wer([Score(c.errors, c.words) for c in self.clips])

    def ms(self, q: float) -> float:
        return percentile([c.ms for c in self.clips], q)

    def by_speaker(self) -> dict[str, float]:
        speakers = sorted({c.speaker for c in self.clips})
        return {
            name: corpus_wer([Score(c.errors, c.words) for c in self.clips if c.speaker == name])
            for name in speakers
        }

    def summary(self) -> dict[str, Any]:
        speakers = sorted({c.speaker for c in self.clips})
        return {
            "option": self.option,
            "language": self.language,
            "human": self.human,
            "clips": len(self.clips),
            "speakers": speakers,
            "audio_s": round(sum(c.seconds for c in self.clips), 1),
            "wer": round(self.wer, 4),
            "p50_ms": round(self.ms(50), 1),
            "p95_ms": round(self.ms(95), 1),
        }


def _measure(stt: Any, option: Option, language: str, clips: list[Clip]) -> Row:
    """Blocking: transcribe every clip with one option."""
    row = Row(option.name, language, human=all(c.human for c in clips))
    stt.transcribe_audio(clips[0].audio, language)  # warm-up, not counted
    for clip in clips:
        t0 = time.perf_counter()
        heard = stt.transcribe_audio(clip.audio, language)
        ms = (time.perf_counter() - t0) * 1000.0
        s = score(clip.text, heard, language)
        row.clips.append(
            ClipResult(
                clip.corpus, clip.speaker, clip.name, clip.seconds, clip.text, heard, s.errors, s.words, ms
            )
        )
    logger.info(
        "%s, %s: WER %.1f %% over %d clips, p50 %.0f ms",
        option.name,
        language,
        100 * row.wer,
        len(clips),
        row.ms(50),
    )
    return row


async def _clips(language: str, max_clips: int) -> list[Clip]:
    human = speech_corpus.human_clips(language, max_clips)
    if human:
        return human
    synthetic = await speech_corpus.synthetic_clips(language)
    return speech_corpus.spread(synthetic, max_clips * 2)


async def measure(settings: Settings, languages: list[str], max_clips: int) -> list[Row]:
    from parley.local.stt import FasterWhisperSTT

    clips = {lang: await _clips(lang, max_clips) for lang in languages}
    rows = []
    for option in OPTIONS:
        wanted = [lang for lang in languages if lang in option.languages and clips[lang]]
        if not wanted:
            continue
        stt = FasterWhisperSTT(
            settings.model_copy(update={"stt_window_min_s": option.window_s}), model=option.model
        )
        try:
            for lang in wanted:
                rows.append(await asyncio.to_thread(_measure, stt, option, lang, clips[lang]))
        finally:
            stt.close()
    return rows


def choose(rows: list[Row]) -> dict[str, str]:
    """Per language: the most accurate option whose p50 fits ``LATENCY_BUDGET_MS`` (the faster one on a tie); the
    fastest when none fits."""
    chosen = {}
    for lang in sorted({r.language for r in rows}):
        mine = [r for r in rows if r.language == lang]
        fits = [r for r in mine if r.ms(50) <= LATENCY_BUDGET_MS]
        best = (
            min(fits, key=lambda r: (round(r.wer, 4), r.ms(50)))
            if fits
            else min(mine, key=lambda r: r.ms(50))
        )
        chosen[lang] = best.option
    return chosen


def plot(path: Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.option}\n{r.language}{'' if r.human else ' (synthetic)'}" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(labels, [100 * r.wer for r in rows], color=["C0" if r.human else "C7" for r in rows])
    left.set_xlabel("word error rate, %")
    left.invert_yaxis()
    right.boxplot([[c.ms for c in r.clips] for r in rows], orientation="horizontal", tick_labels=labels)
    right.set_xlabel("transcription ms per clip")
    right.invert_yaxis()
    right.set_yticklabels([])
    fig.suptitle("parley bench stt: packaged Whisper models on real recordings (2 CPU cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[Row], out: Path, setup: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    chosen = choose(rows)
    (out / "stt.json").write_text(
        json.dumps(
            {
                "setup": setup,
                "chosen": chosen,
                "rows": [{**r.summary(), "detail": [asdict(c) for c in r.clips]} for r in rows],
            },
            indent=1,
            ensure_ascii=False,
        )
    )
    png = out / "stt.png"
    plot(png, rows)
    table = md_table(
        ["option", "language", "speech", "clips", "speakers (WER %)", "WER %", "p50 ms", "p95 ms"],
        [
            [
                r.option,
                r.language,
                "human" if r.human else "synthetic",
                len(r.clips),
                ", ".join(f"{name} {100 * wer:.1f}" for name, wer in r.by_speaker().items()),
                100 * r.wer,
                r.ms(50),
                r.ms(95),
            ]
            for r in rows
        ],
    )
    cost = []
    for lang in sorted({r.language for r in rows}):
        by = {r.option: r for r in rows if r.language == lang}
        short, full = by.get("base, short window"), by.get("base, full window")
        if short and full:
            cost.append(
                f"{lang}: {100 * (short.wer - full.wer):+.1f} WER points for "
                f"{full.ms(50) / max(short.ms(50), 1e-9):.1f}x less time (p50)"
            )
    picks = "; ".join(f"**{lang}**: {option}" for lang, option in chosen.items())
    rel = png.relative_to("docs") if png.is_relative_to("docs") else png
    body = (
        "## `parley bench stt`\n\n"
        f"{setup}\n\n{table}\n\n"
        f"Short encoder window on base, against the full window: {'; '.join(cost) or 'not measured'}.\n\n"
        f"Chosen (the most accurate option whose p50 fits a {LATENCY_BUDGET_MS:.0f} ms budget: speech to text is on "
        f"the critical path of every turn): {picks}.\n\n"
        f"![stt]({rel})\n"
    )
    write_section("stt", body)


async def run_stt_bench(settings: Settings, *, languages: list[str], max_clips: int, out: str) -> int:
    if not speech_corpus.available():
        logger.error("no recordings in %s: run scripts/fetch-speech.sh first", speech_corpus.speech_dir())
        return 2
    rows = await measure(settings, languages, max_clips)
    setup = (
        "faster-whisper int8 on CPU (2 shared cores), beam 1, the language given. Real human recordings with their "
        "transcripts: Asterisk's prompts (en: Allison Smith; fr: June Wallack, Canadian French; 16 kHz G.722), "
        "pocketsphinx's test data (en: a LibriVox reader of *Sense and Sensibility*, the *cards* speaker); at most "
        f"{max_clips} clips per corpus. No German human recording is reachable from the registries: German is read "
        "by SVOX Pico and espeak-ng (voices that are not the assistant's) and marked synthetic. WER over all words "
        "(lower case, punctuation dropped, numbers written out); latency is the transcription call alone."
    )
    report(rows, Path(out), setup)
    return 0
