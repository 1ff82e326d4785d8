"""Choosing an upstream in a pool: least loaded among the healthy, the unhealthy only as a last resort (pure)."""

from __future__ import annotations

import pytest

from parley.relay.pool import Pool, split_urls
from parley.relay.upstream import local_upstream_urls, provider_config
from parley.settings import Settings

A, B, C = "ws://a/v1/realtime", "ws://b/v1/realtime", "ws://c/v1/realtime"


def test_least_loaded_first_ties_in_the_configured_order() -> None:
    pool = Pool([A, B, C])
    assert pool.candidates(0.0) == [A, B, C]
    pool.acquire(A)
    assert pool.candidates(0.0) == [B, C, A]
    pool.acquire(B)
    pool.acquire(C)
    pool.acquire(C)
    assert pool.candidates(0.0) == [A, B, C]
    pool.release(C)
    pool.release(C)
    pool.release(C)  # never below zero
    assert pool.load(C) == 0 and pool.candidates(0.0)[0] == C


def test_unhealthy_members_are_skipped_until_their_cooldown_ends() -> None:
    pool = Pool([A, B, C], cooldown_s=5.0)
    pool.mark_down(A, now=10.0)
    assert pool.candidates(12.0) == [B, C]
    assert pool.candidates(15.0) == [A, B, C]  # cooled down: healthy again
    pool.mark_down(B, now=20.0)
    pool.mark_up(B)  # a connect that worked
    assert B in pool.candidates(21.0)
    assert pool.candidates(21.0, exclude=[A]) == [B, C]


def test_when_none_is_healthy_the_soonest_to_recover_is_tried_first() -> None:
    pool = Pool([A, B], cooldown_s=5.0)
    pool.mark_down(A, now=3.0)
    pool.mark_down(B, now=1.0)
    assert pool.candidates(4.0) == [B, A]  # a single server that restarts is not refused for the cooldown


def test_urls_from_settings() -> None:
    assert split_urls(f" {A}, {B},,") == [A, B]
    assert split_urls(A) == [A]
    with pytest.raises(ValueError):
        Pool([])
    settings = Settings(local_realtime_url=f"{A},{B}", local_model="m")
    assert local_upstream_urls(settings) == [A, B]
    cfg = provider_config(settings, "local")
    assert cfg.urls == (f"{A}?model=m&parley_events=true", f"{B}?model=m&parley_events=true")
    assert cfg.url == cfg.urls[0]
