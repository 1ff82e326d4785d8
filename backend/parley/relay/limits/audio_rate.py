"""Inbound audio rate: a per-session token bucket counted in milliseconds of audio.

The bucket refills at ``rate_ms_per_s`` ms of audio per wall-clock second up to ``burst_ms`` and starts full, so a
client may catch up after a network stall but cannot stream faster than the rate for long. Pure: the caller passes
the time, which keeps it testable and free of I/O.
"""

from __future__ import annotations

from parley.settings import Settings


class AudioRateLimiter:
    def __init__(self, rate_ms_per_s: float, burst_ms: float) -> None:
        if rate_ms_per_s <= 0 or burst_ms <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate_ms_per_s = float(rate_ms_per_s)
        self.burst_ms = float(burst_ms)
        self._tokens = self.burst_ms
        self._last: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AudioRateLimiter:
        return cls(settings.max_audio_rate, settings.audio_burst_ms)

    @property
    def available_ms(self) -> float:
        """Audio that would be accepted now, as of the last call."""
        return self._tokens

    def allow(self, audio_ms: int, now: float) -> bool:
        """Take ``audio_ms`` from the bucket at time ``now`` (seconds, any monotonic origin); False = refuse it.

        A refused chunk takes nothing. A chunk larger than the burst is always refused.
        """
        if audio_ms < 0:
            raise ValueError("audio_ms must not be negative")
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst_ms, self._tokens + (now - self._last) * self.rate_ms_per_s)
        if self._last is None or now > self._last:
            self._last = now
        if audio_ms > self._tokens:
            return False
        self._tokens -= audio_ms
        return True
