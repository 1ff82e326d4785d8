"""The limiter contract, run against both backends (memory, and a real Redis), plus two relay instances on one Redis.

Time: the memory limiter runs on a fake clock that tests advance (no sleeping, exact figures). The Redis limiter reads
Redis ``TIME``, so there time really passes: its timed tests sleep, with margins that hold on a loaded machine (a
sleep only ever lasts longer; every "not yet" is checked well inside its deadline).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import MappingProxyType
from typing import Any

import pytest

from parley.errors import DependencyError, LimitExceeded
from parley.relay.auth import Principal
from parley.relay.limits import Limiter, MemoryLimiter, RedisLimiter, SessionGrant, make_limiter
from parley.settings import Settings

Build = Callable[..., Awaitable[Limiter]]


class Clock:
    """The time the limiters of one test see: a fake clock for the memory backend, real time for Redis."""

    def __init__(self, *, real: bool) -> None:
        self.real = real
        self._now = 1_800_000_000.0

    def __call__(self) -> float:
        return time.time() if self.real else self._now

    async def advance(self, seconds: float) -> None:
        if self.real:
            await asyncio.sleep(seconds)
        else:
            self._now += seconds


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "max_concurrent_sessions": 2,
        "sessions_per_hour": 100,
        "session_max_duration_s": 600,
        "session_lease_s": 30.0,
        "ticket_ttl_s": 30,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["memory", "redis"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return Clock(real=request.param == "redis")


@pytest.fixture
async def build(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Build]:
    """A factory of limiters of one backend; ``window_s`` shortens the hourly window for the sliding-window test."""
    url = request.getfixturevalue("redis_url") if clock.real else ""
    made: list[Limiter] = []

    async def _build(window_s: float = 3600.0, **overrides: Any) -> Limiter:
        settings = _settings(redis_url=url, **overrides)
        limiter: Limiter
        if url:
            limiter = RedisLimiter(settings, window_s=window_s)
        else:
            limiter = MemoryLimiter(settings, clock=clock, window_s=window_s)
        made.append(limiter)
        return limiter

    yield _build
    for limiter in made:
        await limiter.aclose()


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def _refusal(limiter: Limiter, user: str, sid: str) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        await limiter.acquire_session(user, sid)
    return info.value


async def test_concurrency_cap(build: Build, clock: Clock) -> None:
    limiter = await build(session_lease_s=20.0)
    user = _user()
    first = await limiter.acquire_session(user, "s1")
    second = await limiter.acquire_session(user, "s2")
    assert isinstance(first, SessionGrant)
    assert (first.active, second.active, second.max_concurrent) == (1, 2, 2)
    assert (first.starts_in_window, second.starts_in_window, second.per_hour) == (1, 2, 100)
    assert abs(first.expires_at - (clock() + 600)) < 5
    err = await _refusal(limiter, user, "s3")
    assert err.code == "too_many_sessions"
    assert 1 <= err.retry_after_s <= 20
    # Another user is not affected; a refused attempt counted no start.
    assert (await limiter.acquire_session(_user(), "s1")).active == 1
    assert (await limiter.acquire_session(user, "s2")).starts_in_window == 2


async def test_release_frees_a_slot(build: Build) -> None:
    limiter = await build()
    user = _user()
    await limiter.acquire_session(user, "s1")
    await limiter.acquire_session(user, "s2")
    await limiter.release_session(user, "s1")
    await limiter.release_session(user, "never-held")
    grant = await limiter.acquire_session(user, "s3")
    assert (grant.active, grant.starts_in_window) == (2, 3)


async def test_reacquiring_a_live_session_is_a_renewal(build: Build) -> None:
    limiter = await build(max_concurrent_sessions=1)
    user = _user()
    await limiter.acquire_session(user, "s1")
    again = await limiter.acquire_session(user, "s1")
    assert (again.active, again.starts_in_window) == (1, 1)


async def test_lease_expiry_frees_a_slot(build: Build, clock: Clock) -> None:
    limiter = await build(session_lease_s=1.5)
    user = _user()
    await limiter.acquire_session(user, "s1")
    await limiter.acquire_session(user, "s2")
    assert (await _refusal(limiter, user, "s3")).code == "too_many_sessions"
    if not clock.real:  # exactly at the deadline: still held; just past it: free
        await clock.advance(1.5 - 1e-6)
        assert (await _refusal(limiter, user, "s3")).code == "too_many_sessions"
    await clock.advance(1.6)
    assert (await limiter.acquire_session(user, "s3")).active == 1
    assert await limiter.renew_session(user, "s1") is False


async def test_renew_keeps_the_lease(build: Build, clock: Clock) -> None:
    limiter = await build(max_concurrent_sessions=1, session_lease_s=1.5)
    user = _user()
    await limiter.acquire_session(user, "s1")
    for _ in range(3):  # 2.7 s in all: well past the lease
        await clock.advance(0.9)
        assert await limiter.renew_session(user, "s1") is True
    assert (await _refusal(limiter, user, "s2")).code == "too_many_sessions"
    assert await limiter.renew_session(user, "unknown") is False
    await limiter.release_session(user, "s1")
    assert await limiter.renew_session(user, "s1") is False


async def test_hourly_sliding_window(build: Build, clock: Clock) -> None:
    limiter = await build(window_s=3.0, sessions_per_hour=2, max_concurrent_sessions=10)
    user = _user()
    await limiter.acquire_session(user, "a")
    await clock.advance(1.2)
    await limiter.acquire_session(user, "b")
    await limiter.release_session(user, "a")  # releasing does not give a start back
    err = await _refusal(limiter, user, "c")
    assert err.code == "session_rate_limited"
    # The oldest start leaves the window in 1.8 s, rounded up (less when real time ran on meanwhile).
    assert err.retry_after_s in ((1.0, 2.0) if clock.real else (2.0,))
    await clock.advance(2.0)  # "a" left the window (3.2 s old), "b" did not (2.0 s)
    assert (await limiter.acquire_session(user, "c")).starts_in_window == 2
    assert (await _refusal(limiter, user, "d")).code == "session_rate_limited"


async def test_refund_gives_back_the_slot_and_the_start(build: Build) -> None:
    limiter = await build(max_concurrent_sessions=1, sessions_per_hour=1)
    user = _user()
    await limiter.acquire_session(user, "a")
    await limiter.refund_session(user, "a")  # its upstream could not be reached: it never started
    await limiter.refund_session(user, "never-held")
    grant = await limiter.acquire_session(user, "b")
    assert (grant.active, grant.starts_in_window) == (1, 1)
    await limiter.release_session(user, "b")  # a session that ran keeps its start
    assert (await _refusal(limiter, user, "c")).code == "session_rate_limited"


async def test_refund_takes_back_only_its_own_start(build: Build) -> None:
    limiter = await build(max_concurrent_sessions=5, sessions_per_hour=3)
    user = _user()
    for sid in ("s1", "s10", "xs1"):  # ids that share a prefix or a suffix with "s1"
        await limiter.acquire_session(user, sid)
    await limiter.refund_session(user, "s1")
    assert (await limiter.acquire_session(user, "s4")).starts_in_window == 3
    assert (await _refusal(limiter, user, "s5")).code == "session_rate_limited"


async def test_hourly_retry_after_counts_from_the_oldest_start(build: Build) -> None:
    limiter = await build(sessions_per_hour=1)
    user = _user()
    await limiter.acquire_session(user, "a")
    err = await _refusal(limiter, user, "b")
    assert err.code == "session_rate_limited"
    assert 3590 <= err.retry_after_s <= 3600


def _principal(**claims: Any) -> Principal:
    claims.setdefault("sub", "alice")
    return Principal(user_id=claims["sub"], claims=MappingProxyType(claims), providers=frozenset({"local"}))


async def test_ticket_is_single_use(build: Build, clock: Clock) -> None:
    limiter = await build(ticket_ttl_s=30)
    exp = int(clock()) + 3600
    ticket, ttl = await limiter.issue_ticket(_principal(exp=exp, role="tester"))
    assert ttl == 30
    assert len(ticket) >= 40 and ticket.replace("-", "").replace("_", "").isalnum()
    redeemed = await limiter.redeem_ticket(ticket)
    assert redeemed is not None
    principal = redeemed.principal
    assert principal.user_id == "alice"
    assert dict(principal.claims) == {"sub": "alice", "exp": exp, "role": "tester"}
    assert principal.providers == frozenset({"local"})
    assert await limiter.redeem_ticket(ticket) is None
    assert await limiter.redeem_ticket("x" * 43) is None
    assert await limiter.redeem_ticket("../../etc/passwd") is None
    assert await limiter.redeem_ticket("") is None


async def test_ticket_expires(build: Build, clock: Clock) -> None:
    limiter = await build(ticket_ttl_s=2)
    ticket, ttl = await limiter.issue_ticket(_principal())
    assert ttl == 2
    live, _ = await limiter.issue_ticket(_principal())
    await clock.advance(1.0)
    assert await limiter.redeem_ticket(live) is not None  # not yet
    await clock.advance(1.1)
    assert await limiter.redeem_ticket(ticket) is None


async def test_a_restored_ticket_can_be_redeemed_once_more(build: Build) -> None:
    limiter = await build(ticket_ttl_s=30)
    ticket, _ = await limiter.issue_ticket(_principal())
    redeemed = await limiter.redeem_ticket(ticket)
    assert redeemed is not None
    assert await limiter.redeem_ticket(ticket) is None  # out of the store while its request is admitted
    assert await limiter.restore_ticket(redeemed) is True  # the request was refused
    again = await limiter.redeem_ticket(ticket)
    assert again is not None and again.principal == redeemed.principal
    assert abs(again.expires_at - redeemed.expires_at) < 0.01
    assert await limiter.redeem_ticket(ticket) is None


async def test_a_restored_ticket_keeps_its_expiry(build: Build, clock: Clock) -> None:
    limiter = await build(ticket_ttl_s=2)
    ticket, _ = await limiter.issue_ticket(_principal())
    other, _ = await limiter.issue_ticket(_principal())
    redeemed, other_redeemed = await limiter.redeem_ticket(ticket), await limiter.redeem_ticket(other)
    assert redeemed is not None and other_redeemed is not None
    await clock.advance(1.0)
    assert await limiter.restore_ticket(redeemed) is True
    await clock.advance(1.1)
    assert (
        await limiter.redeem_ticket(ticket) is None
    )  # expired at its original time, not 2 s after the restore
    assert await limiter.restore_ticket(other_redeemed) is False


async def test_parallel_redeem_and_restore_never_doubles_a_ticket(build: Build) -> None:
    limiter = await build()
    ticket, _ = await limiter.issue_ticket(_principal())

    async def refused_attempt() -> bool:
        redeemed = await limiter.redeem_ticket(ticket)
        if redeemed is not None:
            await limiter.restore_ticket(redeemed)
        return redeemed is not None

    assert any(await asyncio.gather(*(refused_attempt() for _ in range(20))))
    results = await asyncio.gather(*(limiter.redeem_ticket(ticket) for _ in range(20)))
    assert sum(r is not None for r in results) == 1


async def test_ticket_never_outlives_its_token(build: Build, clock: Clock) -> None:
    limiter = await build(ticket_ttl_s=60)
    _, ttl = await limiter.issue_ticket(_principal(exp=int(clock()) + 5))
    assert 1 <= ttl <= 5


async def test_concurrent_redeem_has_one_winner(build: Build) -> None:
    limiter = await build()
    for _ in range(3):
        ticket, _ = await limiter.issue_ticket(_principal())
        results = await asyncio.gather(*(limiter.redeem_ticket(ticket) for _ in range(20)))
        assert sum(r is not None for r in results) == 1


async def test_ping(build: Build) -> None:
    await (await build()).ping()


async def test_two_instances_hold_the_concurrency_cap_exactly(redis_url: str) -> None:
    settings = _settings(redis_url=redis_url, max_concurrent_sessions=2, sessions_per_hour=1000)
    relays = [RedisLimiter(settings), RedisLimiter(settings)]  # two clients: two relay instances
    user = _user()
    try:
        results = await asyncio.gather(
            *(relays[i % 2].acquire_session(user, f"s{i}") for i in range(50)), return_exceptions=True
        )
        granted = [r for r in results if isinstance(r, SessionGrant)]
        refused = [r for r in results if isinstance(r, LimitExceeded)]
        assert len(granted) == 2 and len(refused) == 48
        assert {r.code for r in refused} == {"too_many_sessions"}
        assert sorted(g.active for g in granted) == [1, 2]
    finally:
        for relay in relays:
            await relay.aclose()


async def test_two_instances_hold_the_hourly_cap_exactly(redis_url: str) -> None:
    settings = _settings(redis_url=redis_url, max_concurrent_sessions=100, sessions_per_hour=5)
    relays = [RedisLimiter(settings), RedisLimiter(settings)]
    user = _user()
    try:
        results = await asyncio.gather(
            *(relays[i % 2].acquire_session(user, f"s{i}") for i in range(50)), return_exceptions=True
        )
        assert sum(isinstance(r, SessionGrant) for r in results) == 5
        assert {r.code for r in results if isinstance(r, LimitExceeded)} == {"session_rate_limited"}
    finally:
        for relay in relays:
            await relay.aclose()


async def test_unreachable_redis_is_a_dependency_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limiter = RedisLimiter(_settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    try:
        with pytest.raises(DependencyError):
            await limiter.ping()
        with pytest.raises(DependencyError):
            await limiter.acquire_session(_user(), "s1")
    finally:
        await limiter.aclose()


async def test_make_limiter_follows_the_settings(redis_url: str) -> None:
    memory = make_limiter(_settings(redis_url=""))
    shared = make_limiter(_settings(redis_url=redis_url))
    try:
        assert isinstance(memory, MemoryLimiter)
        assert isinstance(shared, RedisLimiter)
        assert isinstance(shared, Limiter)
    finally:
        await memory.aclose()
        await shared.aclose()
