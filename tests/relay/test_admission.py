"""Admission on a real relay (uvicorn on loopback, the stock ``websockets`` client), memory and Redis limiters:

- an upstream that cannot be reached is an HTTP 503 before accept, and costs neither a start nor a slot;
- a ticket redeemed by a request that is then refused (403, 429, 503) stays usable, and still opens one session
  at most under parallel connects;
- a client at its concurrency cap that closes a session and reconnects at once is admitted, every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from relay_fakes import fake_upstream
from relay_harness import ORIGIN, Relay, recv_until, relay_settings, running_relay, token
from websockets.asyncio.client import ClientConnection

from parley.relay.limits import Limiter, MemoryLimiter, RedisLimiter
from parley.relay.upstream import ProviderConfig, Upstream, WebSocketUpstream
from parley.settings import Settings


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_limiter(request: pytest.FixtureRequest, backend: str) -> Callable[[Settings], Limiter]:
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""

    def _make(settings: Settings) -> Limiter:
        if url:
            return RedisLimiter(settings.model_copy(update={"redis_url": url}))
        return MemoryLimiter(settings)

    return _make


@dataclass
class Switchboard:
    """Upstreams the test can take down and bring back: every connect goes to ``url`` as it is at that moment.
    ``hold_close`` keeps each upstream's close waiting (a slow upstream teardown) until it is set."""

    live_url: str
    url: str = ""
    hold_close: asyncio.Event | None = None
    closes_waiting: int = 0

    def __post_init__(self) -> None:
        self.url = self.url or self.live_url

    def down(self) -> None:
        self.url = dead_url()

    def up(self) -> None:
        self.url = self.live_url

    def __call__(self, cfg: ProviderConfig) -> Upstream:
        return _Held(dataclasses.replace(cfg, url=self.url), self)


class _Held(WebSocketUpstream):
    def __init__(self, cfg: ProviderConfig, board: Switchboard) -> None:
        super().__init__(cfg)
        self._board = board

    async def close(self) -> None:
        gate = self._board.hold_close
        if gate is not None and not gate.is_set():
            self._board.closes_waiting += 1
            await gate.wait()
        await super().close()


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/v1/realtime"


@contextlib.asynccontextmanager
async def relay_for(
    make_limiter: Callable[[Settings], Limiter],
    *,
    down: bool = False,
    slow_close: bool = False,
    **overrides: Any,
) -> AsyncIterator[tuple[Relay, Switchboard]]:
    """A relay (this test's limiter backend) in front of a fake upstream it reaches through a ``Switchboard``."""
    async with fake_upstream() as live:
        board = Switchboard(live.url, hold_close=asyncio.Event() if slow_close else None)
        if down:
            board.down()
        settings = relay_settings(live.url, upstream_connect_timeout_s=2.0, **overrides)
        limiter = make_limiter(settings)
        try:
            async with running_relay(settings, limiter=limiter, upstream_factory=board) as relay:
                try:
                    yield relay, board
                finally:
                    if board.hold_close is not None:  # let the held teardowns finish before the relay stops
                        board.hold_close.set()
        finally:
            await limiter.aclose()


def user() -> str:
    return f"adm-{uuid.uuid4().hex[:10]}"


async def refusal(relay: Relay, tok: str | None = None, **kw: Any) -> tuple[int, dict[str, Any], Any]:
    with pytest.raises(websockets.InvalidStatus) as info:
        await relay.connect(tok, **kw)
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}").get("error", {}), response.headers


async def opened(relay: Relay, tok: str | None = None, **kw: Any) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await relay.connect(tok, **kw)
    info, _ = await recv_until(ws, "parley.session")
    return ws, info


async def ticket_for(relay: Relay, tok: str) -> str:
    async with httpx.AsyncClient(base_url=relay.http) as client:
        r = await client.post(
            "/v1/voice/ticket", headers={"Authorization": f"Bearer {tok}", "Origin": ORIGIN}
        )
    assert r.status_code == 200, r.text
    return str(r.json()["ticket"])


def with_ticket(ticket: str) -> dict[str, Any]:
    return {"subprotocols": ["realtime", f"parley-ticket.{ticket}"], "origin": ORIGIN}


# --- 1. an unreachable upstream: 503 before accept, no start and no slot spent ------------------------------------


async def test_unreachable_upstream_is_a_503_before_accept_and_costs_no_quota(
    make_limiter: Callable[[Settings], Limiter],
) -> None:
    async with relay_for(make_limiter, down=True, sessions_per_hour=3, max_concurrent_sessions=1) as (
        relay,
        board,
    ):
        tok = token(user())
        for _ in range(5):  # more than the hourly quota, one after the other at a cap of one
            status, error, headers = await refusal(relay, tok)
            assert status == 503
            assert error["code"] == "upstream_unavailable" and "local" in error["message"]
            assert int(headers["Retry-After"]) >= 1 and error["retry_after_s"] == int(headers["Retry-After"])
            assert headers["Content-Type"] == "application/json"
        board.up()  # the voice server is back
        ws, info = await opened(relay, tok)
        assert info["quota"]["sessions_started_this_hour"] == 1
        assert info["quota"]["active_sessions"] == 1
        await ws.close()


async def test_parallel_connects_to_a_dead_upstream_leave_the_caps_whole(
    make_limiter: Callable[[Settings], Limiter],
) -> None:
    async with relay_for(make_limiter, down=True, sessions_per_hour=4, max_concurrent_sessions=2) as (
        relay,
        board,
    ):
        tok = token(user())
        results = await asyncio.gather(*(refusal(relay, tok) for _ in range(12)))
        assert {status for status, _, _ in results} <= {503, 429}
        assert any(status == 503 for status, _, _ in results)
        board.up()
        opened_ws = [await opened(relay, tok) for _ in range(2)]
        assert [info["quota"]["sessions_started_this_hour"] for _, info in opened_ws] == [1, 2]
        status, error, _ = await refusal(relay, tok)
        assert (status, error["code"]) == (429, "too_many_sessions")  # the concurrency cap still holds
        for ws, _ in opened_ws:
            await ws.close()


# --- 2. a refused request leaves its ticket usable; a ticket opens one session at most ----------------------------


async def test_a_ticket_survives_403_429_and_503_refusals(
    make_limiter: Callable[[Settings], Limiter],
) -> None:
    async with relay_for(make_limiter, max_concurrent_sessions=1) as (relay, board):
        name = user()
        tok = token(name, parley_providers=["local"])
        ticket = await ticket_for(relay, tok)
        status, error, _ = await refusal(relay, path="/ws/voice?provider=openai", **with_ticket(ticket))
        assert (status, error["code"]) == (403, "provider_not_allowed")
        status, error, _ = await refusal(
            relay, path="/ws/voice?provider=local&kb=other", **with_ticket(ticket)
        )
        assert (status, error["code"]) == (403, "kb_not_allowed")
        holder, _ = await opened(relay, tok)
        status, error, _ = await refusal(relay, **with_ticket(ticket))
        assert (status, error["code"]) == (429, "too_many_sessions")
        await holder.close()
        board.down()
        status, error, _ = await refusal(relay, **with_ticket(ticket))
        assert (status, error["code"]) == (503, "upstream_unavailable")
        board.up()
        ws, info = await opened(relay, **with_ticket(ticket))
        assert ws.subprotocol == "realtime" and info["status"] == "active"
        status, error, _ = await refusal(relay, **with_ticket(ticket))  # and it is still single-use
        assert (status, error["code"]) == (401, "invalid_ticket")
        await ws.close()


async def _attempt(relay: Relay, ticket: str) -> ClientConnection | int:
    try:
        ws, _ = await opened(relay, **with_ticket(ticket))
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    return ws


async def test_parallel_connects_with_one_ticket_open_one_session(
    make_limiter: Callable[[Settings], Limiter],
) -> None:
    async with relay_for(make_limiter, max_concurrent_sessions=50) as (relay, board):
        tok = token(user())
        for _ in range(3):
            ticket = await ticket_for(relay, tok)
            results = await asyncio.gather(*(_attempt(relay, ticket) for _ in range(20)))
            sessions = [r for r in results if not isinstance(r, int)]
            assert len(sessions) == 1
            assert [r for r in results if isinstance(r, int)] == [401] * 19
            await sessions[0].close()


async def test_parallel_refused_connects_leave_the_ticket_for_exactly_one_session(
    make_limiter: Callable[[Settings], Limiter],
) -> None:
    async with relay_for(make_limiter, max_concurrent_sessions=1) as (relay, board):
        tok = token(user())
        ticket = await ticket_for(relay, tok)
        holder, _ = await opened(relay, tok)
        results = await asyncio.gather(*(_attempt(relay, ticket) for _ in range(20)))
        assert set(results) <= {401, 429} and 429 in results  # refused while the slot is taken
        await holder.close()
        results = await asyncio.gather(*(_attempt(relay, ticket) for _ in range(20)))
        sessions = [r for r in results if not isinstance(r, int)]
        assert len(sessions) == 1, results
        await sessions[0].close()


# --- 3. close, then reconnect at once: never refused -----------------------------------------------------------


@pytest.mark.parametrize("teardown", ["slow", "real"])
async def test_reconnect_right_after_a_clean_close_is_admitted(
    make_limiter: Callable[[Settings], Limiter], teardown: str
) -> None:
    """At a cap of one, close and reconnect at once, many times: 0 refusals. "slow": each upstream's close waits
    until the end of the test (a teardown slower than any reconnect); "real": the fake upstream's own close."""
    async with relay_for(make_limiter, slow_close=teardown == "slow", max_concurrent_sessions=1) as (
        relay,
        board,
    ):
        tok = token(user())
        refused: list[int] = []
        for _ in range(25):
            try:
                ws, info = await opened(relay, tok)
            except websockets.InvalidStatus as exc:
                refused.append(exc.response.status_code)
                continue
            assert info["quota"]["active_sessions"] == 1
            await ws.close()
        assert refused == []
        if teardown == "slow":
            assert board.closes_waiting >= 24  # the teardowns really were still running


async def test_a_live_session_still_holds_its_slot(make_limiter: Callable[[Settings], Limiter]) -> None:
    """The reconnect rule waits only for sessions that are over: one still open keeps the 429."""
    async with relay_for(make_limiter, max_concurrent_sessions=1) as (relay, board):
        tok = token(user())
        ws, _ = await opened(relay, tok)
        status, error, _ = await refusal(relay, tok)
        assert (status, error["code"]) == (429, "too_many_sessions")
        await ws.close()
