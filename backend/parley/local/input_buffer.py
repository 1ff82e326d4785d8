"""The session's input audio: one continuous stream of appended PCM16 24 kHz, of which the uncommitted tail is kept.

Positions are absolute byte offsets in the stream since the first append (``ms * BYTES_PER_MS``), the same clock
the VAD reports and ``audio_start_ms`` / ``audio_end_ms`` use. Caps come from settings: one append at most
``max_append_ms``; the kept buffer at most ``max_buffer_s`` (a full buffer refuses appends in manual mode; with
server VAD the session trims silence and force-ends over-long speech, so it never fills).
"""

from __future__ import annotations

from parley.errors import InvalidRequest
from parley.realtime.audio import BYTES_PER_MS

MIN_COMMIT_MS = 100


class InputBuffer:
    def __init__(self, *, max_append_ms: int, max_buffer_s: int) -> None:
        self.max_append_bytes = max_append_ms * BYTES_PER_MS
        self.max_buffer_bytes = max_buffer_s * 1000 * BYTES_PER_MS
        self._buf = bytearray()
        self.start = 0  # absolute offset of _buf[0]
        self.end = 0  # absolute offset after the last appended byte

    @property
    def end_ms(self) -> int:
        return self.end // BYTES_PER_MS

    @property
    def buffered_ms(self) -> int:
        return len(self._buf) // BYTES_PER_MS

    def check_append(self, pcm: bytes, *, enforce_total: bool) -> None:
        if len(pcm) % 2:
            raise InvalidRequest(
                "Audio must be whole PCM16 samples (an even number of bytes).",
                code="invalid_value",
                param="audio",
            )
        if len(pcm) > self.max_append_bytes:
            raise InvalidRequest(
                f"One append may carry at most {self.max_append_bytes // BYTES_PER_MS} ms of audio; "
                f"this one has {len(pcm) // BYTES_PER_MS} ms. Send smaller chunks.",
                code="audio_too_large",
                param="audio",
            )
        if enforce_total and len(self._buf) + len(pcm) > self.max_buffer_bytes:
            raise InvalidRequest(
                f"The input audio buffer is full ({self.max_buffer_bytes // BYTES_PER_MS // 1000} s). "
                "Commit or clear it first.",
                code="input_audio_buffer_full",
                param="audio",
            )

    def append(self, pcm: bytes) -> None:
        self._buf += pcm
        self.end += len(pcm)

    def take(self, start: int, end: int) -> bytes:
        """The audio between two absolute offsets (clamped to what is kept)."""
        lo = max(start, self.start) - self.start
        hi = max(min(end, self.end), self.start) - self.start
        return bytes(self._buf[lo:hi]) if hi > lo else b""

    def drop_before(self, offset: int) -> None:
        offset = min(max(offset, self.start), self.end)
        del self._buf[: offset - self.start]
        self.start = offset

    def keep_last(self, ms: int) -> None:
        self.drop_before(self.end - ms * BYTES_PER_MS)

    def clear(self) -> None:
        self.drop_before(self.end)
