"""Two relay app instances sharing one real Redis hold the per-user caps under 50 parallel connects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import Relay, recv_until, relay_settings, running_relay, token
from websockets.asyncio.client import ClientConnection

from parley.relay.limits.redis import RedisLimiter

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def two_relays(
    redis_url: str, upstream: FakeUpstream, **overrides: Any
) -> AsyncIterator[tuple[Relay, Relay]]:
    settings = relay_settings(upstream.url, redis_url=redis_url, **overrides)
    a_limiter, b_limiter = RedisLimiter(settings), RedisLimiter(settings)
    try:
        async with (
            running_relay(settings, limiter=a_limiter) as a,
            running_relay(settings, limiter=b_limiter) as b,
        ):
            yield a, b
    finally:
        await a_limiter.aclose()
        await b_limiter.aclose()


async def _attempt(relay: Relay, tok: str) -> ClientConnection | int:
    try:
        ws = await relay.connect(tok)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await recv_until(ws, "parley.session")
    return ws


async def _storm(a: Relay, b: Relay, user: str, n: int = 50) -> tuple[list[ClientConnection], list[int]]:
    tok = token(user)
    results = await asyncio.gather(*(_attempt(a if i % 2 else b, tok) for i in range(n)))
    opened = [r for r in results if not isinstance(r, int)]
    statuses = [r for r in results if isinstance(r, int)]
    return opened, statuses


async def test_concurrency_cap_holds_across_two_instances(redis_url: str) -> None:
    async with (
        fake_upstream() as upstream,
        two_relays(redis_url, upstream, max_concurrent_sessions=2) as (a, b),
    ):
        opened, statuses = await _storm(a, b, "storm-concurrent")
        assert len(opened) == 2
        assert statuses == [429] * 48
        assert upstream.connections == 2  # refused clients never cost an upstream
        for ws in opened:
            await ws.close()


async def test_hourly_start_cap_holds_across_two_instances(redis_url: str) -> None:
    async with (
        fake_upstream() as upstream,
        two_relays(redis_url, upstream, max_concurrent_sessions=50, sessions_per_hour=5) as (a, b),
    ):
        opened, statuses = await _storm(a, b, "storm-hourly")
        assert len(opened) == 5
        assert statuses == [429] * 45
        assert upstream.connections == 5
        for ws in opened:
            await ws.close()
