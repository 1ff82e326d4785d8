"""Streaming voice activity detection with the Silero v6 ONNX model that ships inside faster-whisper.

One ONNX session is loaded once per process and shared by every session's detector (``onnxruntime`` sessions are
safe to run from several threads); each detector keeps its own recurrent state (``h``, ``c``), the last 64 samples
of context the model expects, and the speech/silence state machine.

Input is PCM16 24 kHz in pieces of any length. Every 768 input samples (32 ms) become one 512-sample frame at
16 kHz (exact 3:2 decimation by linear interpolation, so frames never straddle a call). All complete frames of a
``feed`` call go through the model in one ``run`` (the model's LSTM steps through the rows in order).

Edges: a frame with speech probability >= ``threshold`` starts speech; ``start.audio_ms`` is that frame's start
minus ``prefix_padding_ms`` (clamped at 0). While speaking, frames below ``threshold - 0.15`` count as silence
(hysteresis, as Silero's own iterator does); after ``silence_duration_ms`` of it a ``stop`` is emitted whose
``audio_ms`` is where the silence began. Positions count every sample fed since the detector was made, also
across ``reset``.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from parley.local.engines import VadEvent, VadParams

logger = logging.getLogger(__name__)

IN_RATE = 24_000
FRAME = 512  # samples at 16 kHz fed to the model per step
CONTEXT = 64  # samples of the previous frame the model sees in front of each frame
IN_FRAME = FRAME * 3 // 2  # 768 samples at 24 kHz
FRAME_MS = IN_FRAME * 1000 // IN_RATE  # 32
HYSTERESIS = 0.15

_load_lock = threading.Lock()


def silero_model_path() -> Path:
    from faster_whisper.vad import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


@functools.cache
def _shared_session() -> Any:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    path = silero_model_path()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=opts)
    logger.info("loaded Silero VAD from %s", path)
    return session


def shared_session() -> Any:
    """The process-wide Silero ONNX session (loaded on first use)."""
    with _load_lock:
        return _shared_session()


def _decimate(x: np.ndarray) -> np.ndarray:
    """24 kHz -> 16 kHz for whole frames (length a multiple of 3): keep sample 3k, average 3k+1 and 3k+2."""
    r = x.reshape(-1, 3)
    out = np.empty((r.shape[0], 2), dtype=np.float32)
    out[:, 0] = r[:, 0]
    out[:, 1] = (r[:, 1] + r[:, 2]) * 0.5
    return out.reshape(-1)


class SileroVoiceActivity:
    """The streaming detector of one session. ``feed`` is cheap enough to call on the event loop."""

    def __init__(self, params: VadParams, session: Any | None = None) -> None:
        self.params = params
        self._session = session if session is not None else shared_session()
        self._samples_in = 0  # input samples seen (24 kHz), for positions
        self._odd = b""
        self.reset()

    def reset(self) -> None:
        """Forget speech state, model state and unprocessed audio; positions keep counting."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frame_base = self._samples_in  # input sample index where the next frame starts
        self._speaking = False
        self._silence_start_ms: int | None = None
        self.last_prob = 0.0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        if self._odd:
            pcm, self._odd = self._odd + pcm, b""
        if len(pcm) % 2:
            pcm, self._odd = pcm[:-1], pcm[-1:]
        x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) * (1.0 / 32768.0)
        self._samples_in += x.size
        self._pending = np.concatenate([self._pending, x]) if self._pending.size else x
        n_frames = self._pending.size // IN_FRAME
        if n_frames == 0:
            return []
        take = n_frames * IN_FRAME
        audio = _decimate(self._pending[:take])
        self._pending = self._pending[take:].copy()
        rows = np.empty((n_frames, CONTEXT + FRAME), dtype=np.float32)
        frames = audio.reshape(n_frames, FRAME)
        rows[:, CONTEXT:] = frames
        rows[0, :CONTEXT] = self._context
        if n_frames > 1:
            rows[1:, :CONTEXT] = frames[:-1, -CONTEXT:]
        self._context = frames[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(None, {"input": rows, "h": self._h, "c": self._c})
        events: list[VadEvent] = []
        for prob in np.asarray(probs, dtype=np.float32).reshape(-1):
            start_ms = self._frame_base * 1000 // IN_RATE
            self._frame_base += IN_FRAME
            self._step(float(prob), start_ms, events)
        return events

    def _step(self, prob: float, frame_start_ms: int, events: list[VadEvent]) -> None:
        p = self.params
        self.last_prob = prob
        if not self._speaking:
            if prob >= p.threshold:
                self._speaking = True
                self._silence_start_ms = None
                events.append(VadEvent("start", max(0, frame_start_ms - p.prefix_padding_ms)))
            return
        if prob >= max(p.threshold - HYSTERESIS, 0.01):
            self._silence_start_ms = None
            return
        if self._silence_start_ms is None:
            self._silence_start_ms = frame_start_ms
        if frame_start_ms + FRAME_MS - self._silence_start_ms >= p.silence_duration_ms:
            self._speaking = False
            events.append(VadEvent("stop", self._silence_start_ms))
            self._silence_start_ms = None


class SileroVadFactory:
    """``VadFactory``: makes a detector per session, all sharing one ONNX session."""

    def __init__(self) -> None:
        self._session = shared_session()

    def __call__(self, params: VadParams) -> SileroVoiceActivity:
        return SileroVoiceActivity(params, self._session)
