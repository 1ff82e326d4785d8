"""PCM16 helpers: base64 <-> int16 arrays, resampling, durations. The wire format is PCM16 mono 24 kHz."""

from __future__ import annotations

import base64

import numpy as np

WIRE_RATE = 24_000
BYTES_PER_MS = WIRE_RATE * 2 // 1000  # 48


def b64_to_pcm(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def pcm_to_b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


def pcm_ms(pcm_len_bytes: int, rate: int = WIRE_RATE) -> int:
    return (pcm_len_bytes // 2) * 1000 // rate


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def float_to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Linear-interpolation resampling of a float mono signal. Good enough for speech at these rates."""
    if src_rate == dst_rate or x.size == 0:
        return x
    n_out = int(round(x.size * dst_rate / src_rate))
    t_out = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    return np.interp(t_out, np.arange(x.size, dtype=np.float64), x).astype(np.float32)
