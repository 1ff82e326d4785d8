"""Text to speech with espeak-ng (Debian's ``espeak-ng``), the fallback for a language no other engine speaks.

Robotic but available for ~100 languages. Each sentence runs ``espeak-ng --stdout`` (22 050 Hz WAV), resampled to
24 kHz and streamed by ``ThreadedTTS``. Voices are named ``espeak-<language>`` (``espeak-fr``, ``espeak-de``, ...).
Speed is espeak's words per minute: 175 x speed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from parley.errors import TTSFailed
from parley.local.pico import sentences
from parley.local.tts_stream import Emit, ThreadedTTS
from parley.realtime.audio import WIRE_RATE, pcm16_to_float, resample

logger = logging.getLogger(__name__)

PREFIX = "espeak-"
WORDS_PER_MINUTE = 175
TIMEOUT_S = 30.0
LANGUAGES = ("en", "fr", "de", "es", "it", "nl", "pt", "pl", "sv", "da", "fi", "cs")


def binary() -> str | None:
    return shutil.which("espeak-ng")


def available() -> bool:
    return binary() is not None


def wav_pcm(wav: bytes) -> tuple[bytes, int]:
    """The PCM16 samples and rate of a mono WAV that espeak-ng streamed (its sizes say 0x7ffff000: ignored)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise TTSFailed("espeak-ng wrote no WAV")
    rate = int.from_bytes(wav[24:28], "little")
    at = wav.find(b"data", 12)
    if at < 0:
        raise TTSFailed("espeak-ng's WAV has no data")
    data = wav[at + 8 :]
    return data[: len(data) // 2 * 2], rate


class EspeakTTS(ThreadedTTS):
    """``TextToSpeech`` with espeak-ng in a child process per sentence."""

    engine = "espeak"

    def __init__(self, default_voice: str = "espeak-en") -> None:
        super().__init__()
        self.default_voice = default_voice

    def voices(self) -> list[str]:
        return [PREFIX + lang for lang in LANGUAGES]

    def has_voice(self, voice: str) -> bool:
        return voice.startswith(PREFIX) and voice.removeprefix(PREFIX) in LANGUAGES

    def resolve_voice(self, voice: str | None) -> str:
        return voice if voice and self.has_voice(voice) else self.default_voice

    def _speak(self, text: str, voice: str, speed: float, emit: Emit) -> None:
        exe = binary()
        if exe is None:
            raise TTSFailed("espeak-ng is not installed (apt-get install espeak-ng)")
        argv = [
            exe,
            "--stdout",
            "-b",
            "1",
            "-v",
            voice.removeprefix(PREFIX),
            "-s",
            str(round(WORDS_PER_MINUTE * speed)),
        ]
        for sentence in sentences(text):
            try:
                done = subprocess.run(
                    argv, input=sentence.encode(), capture_output=True, timeout=TIMEOUT_S, check=True
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise TTSFailed(f"espeak-ng failed: {exc}") from exc
            pcm, rate = wav_pcm(done.stdout)
            if not emit(resample(pcm16_to_float(pcm), rate, WIRE_RATE)):
                return
