"""Real human recordings with their transcripts, from the speech cache that ``scripts/fetch-speech.sh`` fills.

- ``asterisk``: Asterisk's core prompts, 16 kHz G.722 (decoded with the ``g722`` package), texts from
  ``core-sounds-<lang>.txt``: US English (Allison Smith) and Canadian French (June Wallack). Only prompts of at
  least ``MIN_WORDS`` words with no sound effect in brackets are used.
- ``librivox``: pocketsphinx's test readings of "Sense and Sensibility" (one LibriVox reader), 16 kHz WAV.
- ``cards``: pocketsphinx's "cards" recordings (another speaker naming playing cards), 16 kHz WAV.

No German human recording with a transcript is reachable from the registries (Debian has no German Asterisk
prompts); ``synthetic_clips`` is the stand-in: German sentences read by two voices that are not the assistant's
(SVOX Pico de-DE, espeak-ng de), marked as synthetic wherever they are reported.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from parley.realtime.audio import WIRE_RATE, pcm16_to_float, resample

logger = logging.getLogger(__name__)

RATE = 16_000
MIN_WORDS = 4
# Typos in the shipped prompt texts (the recordings say the word right): corrected so they do not count as errors.
ERRATA = {"présentemnet": "présentement"}
ASTERISK_VOICES = {"en": ("en", "en_US_f_Allison"), "fr": ("fr", "fr_CA_f_June")}

GERMAN_SENTENCES = (
    "Wie spät ist es jetzt in Berlin?",
    "Ich möchte morgen früh einen Termin beim Arzt.",
    "Die Hauptstadt von Deutschland ist Berlin.",
    "Kannst du mir bitte das Wetter für heute sagen?",
    "Wir treffen uns um drei Uhr im Büro.",
    "Wo finde ich den nächsten Bahnhof?",
    "Bitte schick mir die Rechnung per E-Mail.",
    "Wie viele Einwohner hat die Stadt München?",
)


@dataclass(frozen=True)
class Clip:
    corpus: str
    speaker: str
    language: str
    name: str
    text: str
    audio: np.ndarray  # float32 mono 16 kHz
    human: bool = True

    @property
    def seconds(self) -> float:
        return self.audio.size / RATE


def speech_dir() -> Path:
    """``PARLEY_SPEECH_DIR``, or ``<cache>/parley/speech`` (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    env = os.environ.get("PARLEY_SPEECH_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley" / "speech"


def available(root: Path | None = None) -> bool:
    root = root or speech_dir()
    return (root / "asterisk" / ".done").is_file() and (root / "pocketsphinx" / ".done").is_file()


T = TypeVar("T")


def spread(items: list[T], limit: int) -> list[T]:
    """At most ``limit`` items, evenly spread over the list (repeatable: no randomness)."""
    if limit <= 0 or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def decode_g722(data: bytes) -> np.ndarray:
    import G722

    pcm = G722.G722(RATE, 64_000).decode(data)
    return np.asarray(pcm, dtype=np.float32) / 32768.0


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16 kHz mono PCM16")
        return pcm16_to_float(w.readframes(w.getnframes()))


def _prompt_texts(doc: Path) -> Iterator[tuple[str, str]]:
    with gzip.open(doc, "rt", encoding="utf-8") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if not sep or line.startswith(";") or "/" in name:
                continue
            text = text.strip()
            for wrong, right in ERRATA.items():
                text = text.replace(wrong, right)
            if len(text.split()) >= MIN_WORDS and not re.search(r"[\[\]()]", text):
                yield name.strip(), text


def asterisk_clips(language: str, limit: int, root: Path | None = None) -> list[Clip]:
    root = (root or speech_dir()) / "asterisk" / "usr" / "share"
    code, voice = ASTERISK_VOICES[language]
    doc = root / "doc" / f"asterisk-core-sounds-{code}" / f"core-sounds-{code}.txt.gz"
    found = []
    for name, text in sorted(_prompt_texts(doc)):
        path = root / "asterisk" / "sounds" / voice / f"{name}.g722"
        if path.is_file():
            found.append((name, text, path))
    chosen = spread(found, limit)
    speaker = voice.split("_")[-1]
    return [
        Clip("asterisk", speaker, language, name, text, decode_g722(path.read_bytes()))
        for name, text, path in chosen
    ]


def librivox_clips(limit: int, root: Path | None = None) -> list[Clip]:
    folder = (root or speech_dir()) / "pocketsphinx" / "librivox"
    clips = [
        Clip(
            "librivox",
            "austen-reader",
            "en",
            wav.stem,
            wav.with_suffix(".txt").read_text().strip(),
            read_wav(wav),
        )
        for wav in sorted(folder.glob("*.wav"))
    ]
    return spread(clips, limit)


def cards_clips(limit: int, root: Path | None = None) -> list[Clip]:
    folder = (root or speech_dir()) / "pocketsphinx" / "cards"
    clips = []
    for line in (folder / "cards.transcription").read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((\w+)\)", line.strip())
        if m:
            text, name = m.group(1).strip(), m.group(2)
            clips.append(Clip("cards", "cards-speaker", "en", name, text, read_wav(folder / f"{name}.wav")))
    return spread(clips, limit)


def human_clips(language: str, limit: int, root: Path | None = None) -> list[Clip]:
    """The real recordings of ``language`` (``limit`` per corpus); [] for a language with none."""
    if language == "en":
        return asterisk_clips("en", limit, root) + librivox_clips(limit, root) + cards_clips(limit, root)
    if language in ASTERISK_VOICES:
        return asterisk_clips(language, limit, root)
    return []


async def synthetic_clips(language: str, texts: tuple[str, ...] = GERMAN_SENTENCES) -> list[Clip]:
    """``texts`` read by SVOX Pico and by espeak-ng (each when installed): voices that are not the assistant's
    English Piper voice, for a language with no human recording here. Marked ``human=False``."""
    from parley.local import espeak, pico
    from parley.local.espeak import EspeakTTS
    from parley.local.pico import PicoTTS

    engines: list[tuple[str, PicoTTS | EspeakTTS, str]] = []
    if pico.available() and language in pico.BY_LANGUAGE:
        engines.append(("pico", PicoTTS(pico.BY_LANGUAGE[language]), pico.BY_LANGUAGE[language]))
    if espeak.available():
        engines.append(("espeak-ng", EspeakTTS(), espeak.PREFIX + language))
    clips = []
    for speaker, engine, voice in engines:
        try:
            for i, text in enumerate(texts):
                pcm = b"".join([chunk async for chunk in engine.synthesize(text, voice=voice)])
                audio = resample(pcm16_to_float(pcm), WIRE_RATE, RATE)
                clips.append(
                    Clip("synthetic", speaker, language, f"{speaker}-{i:02d}", text, audio, human=False)
                )
        finally:
            engine.close()
    return clips
