"""The inbound audio token bucket, with a scripted clock."""

from __future__ import annotations

import pytest

from parley.relay.limits import AudioRateLimiter
from parley.settings import Settings


def test_real_time_audio_always_passes() -> None:
    bucket = AudioRateLimiter(rate_ms_per_s=1500, burst_ms=3000)
    now = 100.0
    for _ in range(600):  # a minute of 100 ms chunks sent in real time
        now += 0.1
        assert bucket.allow(100, now)


def test_burst_then_refill_at_the_rate() -> None:
    bucket = AudioRateLimiter(rate_ms_per_s=1500, burst_ms=3000)
    assert all(bucket.allow(500, 0.0) for _ in range(6))  # the whole burst at once
    assert not bucket.allow(1, 0.0)
    assert not bucket.allow(200, 0.1)  # 150 ms refilled: not enough, and nothing taken
    assert bucket.allow(300, 0.2)  # 300 ms refilled by now
    assert bucket.allow(3000, 10.0)  # refill caps at the burst
    assert not bucket.allow(1, 10.0)


def test_faster_than_allowed_is_refused_over_time() -> None:
    bucket = AudioRateLimiter(rate_ms_per_s=1500, burst_ms=3000)
    now, accepted = 0.0, 0
    for _ in range(100):  # 200 ms of audio every 100 ms: twice real time for 10 s
        now += 0.1
        accepted += 200 * bucket.allow(200, now)
    assert 15_000 <= accepted <= 15_000 + 3000 + 200


def test_chunk_larger_than_the_burst_is_refused_and_zero_passes() -> None:
    bucket = AudioRateLimiter(rate_ms_per_s=1000, burst_ms=500)
    assert not bucket.allow(501, 0.0)
    assert bucket.allow(500, 0.0)
    assert bucket.allow(0, 0.0)
    with pytest.raises(ValueError):
        bucket.allow(-1, 0.0)


def test_clock_going_backwards_refills_nothing() -> None:
    bucket = AudioRateLimiter(rate_ms_per_s=1000, burst_ms=1000)
    assert bucket.allow(1000, 50.0)
    assert not bucket.allow(100, 40.0)
    assert not bucket.allow(100, 50.05)
    assert bucket.allow(100, 50.2)


def test_from_settings_and_bad_arguments() -> None:
    bucket = AudioRateLimiter.from_settings(Settings(max_audio_rate=1200, audio_burst_ms=2400))
    assert (bucket.rate_ms_per_s, bucket.burst_ms, bucket.available_ms) == (1200, 2400, 2400)
    with pytest.raises(ValueError):
        AudioRateLimiter(0, 100)
