"""Handshake hygiene on a real relay (uvicorn on loopback, raw sockets): oversized heads get 431, slow or silent
clients are cut off by the handshake time-out, pending connections are capped, and refusals are logged rationed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from relay_harness import Relay, relay_settings, running_relay, token

from parley.logs import RefusalRateLimit, is_refusal
from parley.relay.pending import PendingHeads

UNUSED_UPSTREAM = "ws://127.0.0.1:9/v1/realtime"  # no test here gets as far as an upstream
WITHIN_S = 10.0  # generous bound for an answer the relay gives at once (or after a sub-second time-out)


def upgrade(*headers: str, path: str = "/ws/voice?provider=local") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.asynccontextmanager
async def raw(relay: Relay) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """The relay's whole answer up to the close it must end with: (status, JSON error body)."""
    async with asyncio.timeout(WITHIN_S):
        data = await reader.read()  # to EOF: the relay closes after a refusal
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"] if body else {}


async def ask(relay: Relay, request: bytes) -> tuple[int, dict[str, Any]]:
    async with raw(relay) as (reader, writer):
        writer.write(request)
        return await answer(reader)


def pending(relay: Relay) -> PendingHeads:
    heads: PendingHeads = relay.server.config.http_protocol_class.pending  # type: ignore[attr-defined]
    return heads


async def until(condition: Any, within_s: float = WITHIN_S) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - counters of the protocol objects, no event to await
            await asyncio.sleep(0.005)


@pytest.fixture
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[Relay]:
    overrides = getattr(request, "param", {})
    async with running_relay(relay_settings(UNUSED_UPSTREAM, **overrides)) as r:
        yield r


# --- sizes ------------------------------------------------------------------------------------------------------


async def test_a_header_over_8_kib_gets_431_and_the_connection_closed(relay: Relay) -> None:
    status, error = await ask(relay, upgrade("Authorization: Bearer " + "x" * 9000))
    assert status == 431
    assert error["code"] == "header_too_large"
    # The stock WebSocket client sees the status too.
    with pytest.raises(websockets.InvalidStatus) as info:
        await relay.connect("x" * 9000)
    assert info.value.response.status_code == 431


async def test_a_long_header_under_the_limit_is_judged_by_the_relay(relay: Relay) -> None:
    status, error = await ask(relay, upgrade("Authorization: Bearer " + "x" * 8000))
    assert (status, error["code"]) == (401, "invalid_token")


@pytest.mark.parametrize("relay", [{"max_head_bytes": 4096, "max_headers": 10}], indirect=True)
async def test_too_many_headers_or_too_large_a_head_gets_431(relay: Relay) -> None:
    many = [f"X-Pad-{i}: 1" for i in range(10)]
    assert (await ask(relay, upgrade(*many)))[0] == 431
    large = [f"X-Pad-{i}: {'y' * 1500}" for i in range(3)]
    assert (await ask(relay, upgrade(*large)))[0] == 431


async def test_a_url_over_8_kib_gets_414(relay: Relay) -> None:
    status, error = await ask(relay, upgrade(path="/ws/voice?provider=local&pad=" + "z" * 9000))
    assert (status, error["code"]) == (414, "url_too_long")


async def test_a_head_sent_in_endless_pieces_is_cut_off_at_the_head_limit(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "parley.relay.handshake")
    async with raw(relay) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(64):  # 64 KiB of one header value, more than the 32 KiB head limit
                writer.write(b"a" * 1024)
                await writer.drain()
        # The relay closes; as the client was still sending, the close may come as a reset, not the 431.
        with contextlib.suppress(ConnectionError):
            await answer(reader)
    assert any("431 header_too_large" in r.getMessage() for r in caplog.records)
    await until(lambda: pending(relay).total == 0)


async def test_keep_alive_requests_are_served_and_nothing_stays_pending(relay: Relay) -> None:
    async with raw(relay) as (reader, writer):
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(WITHIN_S):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
    await until(lambda: pending(relay).total == 0 and not pending(relay).per_ip)


# --- time ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("relay", [{"handshake_timeout_s": 0.3}], indirect=True)
async def test_a_silent_connection_gets_408_and_is_closed(relay: Relay) -> None:
    async with raw(relay) as (reader, _):
        status, error = await answer(reader)
    assert (status, error["code"]) == (408, "request_timeout")
    await until(lambda: pending(relay).total == 0)


@pytest.mark.parametrize("relay", [{"handshake_timeout_s": 0.3}], indirect=True)
async def test_a_request_dripped_byte_by_byte_is_cut_off_at_the_time_out(relay: Relay) -> None:
    request = upgrade(f"Authorization: Bearer {token()}")
    sent = 0
    async with raw(relay) as (reader, writer):

        async def drip() -> None:  # the attack's own pace: one byte every 20 ms (the whole request: > 10 s)
            nonlocal sent
            for byte in request:
                writer.write(bytes([byte]))
                sent += 1
                await asyncio.sleep(0.02)

        dripping = asyncio.create_task(drip())
        try:
            status, error = await answer(reader)
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dripping
    assert (status, error["code"]) == (408, "request_timeout")
    assert sent < len(request)


# --- pending caps -------------------------------------------------------------------------------------------------


async def _silent(relay: Relay, n: int, stack: contextlib.AsyncExitStack) -> list[asyncio.StreamWriter]:
    writers = [(await stack.enter_async_context(raw(relay)))[1] for _ in range(n)]
    await until(lambda: pending(relay).total >= n)
    return writers


@pytest.mark.parametrize(
    "relay", [{"max_pending_handshakes_per_ip": 3, "handshake_timeout_s": 60}], indirect=True
)
async def test_past_the_per_ip_cap_of_pending_connections_a_new_one_gets_503_at_once(relay: Relay) -> None:
    async with contextlib.AsyncExitStack() as stack:
        silent = await _silent(relay, 3, stack)
        status, error = await ask(relay, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, error["code"]) == (503, "too_many_pending_connections")
        silent[0].close()
        await until(lambda: pending(relay).total == 2)
        async with raw(relay) as (reader, writer):  # a slot is free again
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(WITHIN_S):
                assert (await reader.read()).startswith(b"HTTP/1.1 200")
    await until(lambda: pending(relay).total == 0 and not pending(relay).per_ip)


@pytest.mark.parametrize(
    "relay",
    [{"max_pending_handshakes": 2, "max_pending_handshakes_per_ip": 100, "handshake_timeout_s": 60}],
    indirect=True,
)
async def test_past_the_global_cap_of_pending_connections_a_new_one_gets_503(relay: Relay) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await _silent(relay, 2, stack)
        status, _ = await ask(relay, upgrade(f"Authorization: Bearer {token()}"))
        assert status == 503
    await until(lambda: pending(relay).total == 0)


# --- refusals in the log ------------------------------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_flood_of_refusals_logs_a_bounded_number_of_lines_with_the_count_of_the_rest(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    lines = Lines()
    lines.addFilter(RefusalRateLimit(5, 60.0, clock=lambda: now[0]))
    caplog.set_level(logging.INFO)
    logging.getLogger().addHandler(lines)
    try:
        for i in range(30):  # no credentials: 401, and headers too large: 431
            request = upgrade() if i % 2 else upgrade("X-Big: " + "b" * 9000)
            assert (await ask(relay, request))[0] in (401, 431)
        refusals = [r for r in caplog.records if is_refusal(r)]
        assert (
            len(refusals) >= 30
        )  # every refusal reached the logging system (uvicorn adds lines of its own)...
        assert len(lines.records) == 5  # ... and 5 lines were let through in this minute
        now[0] = 61.0
        assert (await ask(relay, upgrade()))[0] == 401
        await until(lambda: len(lines.records) > 5)
        first_of_next_minute = lines.records[5]
        assert first_of_next_minute.suppressed == len(refusals) - 5  # type: ignore[attr-defined]
        assert f"({len(refusals) - 5} more refusals not logged)" in first_of_next_minute.getMessage()
    finally:
        logging.getLogger().removeHandler(lines)
