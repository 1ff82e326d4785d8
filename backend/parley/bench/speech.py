"""Synthetic test speech: ``speak(text)`` returns PCM16 mono 24 kHz audio of Piper reading ``text``.

Blocking, repeatable (Piper's noise off) and cached per (text, padding) in this process; for tests and benchmarks,
never for serving.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import numpy as np

from parley.realtime.audio import WIRE_RATE, float_to_pcm16

logger = logging.getLogger(__name__)

_lock = threading.Lock()


@functools.cache
def _voice() -> Any:
    from parley.local.tts import default_voice_paths, load_voice

    return load_voice(*default_voice_paths())


@functools.lru_cache(maxsize=256)
def _speak(text: str, lead_silence_ms: int, tail_silence_ms: int) -> bytes:
    from piper import SynthesisConfig

    from parley.local.tts import synthesize_pcm24

    # Piper samples noise (VITS noise_scale / noise_w) by default, so the same text came out different on every
    # run, now and then misheard ("France" as "friends"): tests and benchmarks use noise-free, repeatable speech,
    # 10% slower than Piper's default, at which tiny.en hears every bench question's key words.
    still = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.1)
    with _lock:
        parts = list(synthesize_pcm24(_voice(), text, still))
    speech = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    lead = np.zeros(WIRE_RATE * lead_silence_ms // 1000, dtype=np.float32)
    tail = np.zeros(WIRE_RATE * tail_silence_ms // 1000, dtype=np.float32)
    logger.debug("spoke %r: %d ms of speech", text, speech.size * 1000 // WIRE_RATE)
    return float_to_pcm16(np.concatenate([lead, speech * 0.8, tail]))


def speak(text: str, *, lead_silence_ms: int = 300, tail_silence_ms: int = 800) -> bytes:
    """PCM16 24 kHz: ``lead_silence_ms`` of silence, Piper's speech of ``text``, ``tail_silence_ms`` of silence."""
    return _speak(text, lead_silence_ms, tail_silence_ms)


def speech_ms(text: str) -> int:
    """Length of the speech alone (no padding) in ms."""
    return len(_speak(text, 0, 0)) // 2 * 1000 // WIRE_RATE
