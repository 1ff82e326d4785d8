"""Socket-level fuzz: a real relay (uvicorn on loopback) and a scripted upstream, 10,800 hostile and valid frames
over 12 connections (4 rounds of 3 at once), with audio appends interleaved.

Frames come from ``fuzz_frames`` with seeded choices (every category, binary frames, frames over
``max_frame_bytes``), sent in batches of 30, each batch followed by a probe (an event type the relay refuses, with
a known ``event_id``); the relay answers in order, so the errors before the probe's are the batch's. Then two
connections that break the protocol itself: a frame over the WebSocket size limit (closed 1009) and, in its own
tests, a text frame of invalid UTF-8 (closed 1007).

Asserted: every refused frame got its error and no more errors came than frames that may be refused; every frame
received is strict JSON; no close but our own (and 1007/1009 for the protocol breakers: never 1011); nothing
logged at ERROR; each session still answers a typed question afterwards; after all close, ``state.sessions`` is
empty and the event loop runs no more tasks than before the first connect; memory is flat: what Python holds
(tracemalloc, logging's and pytest's own records left out) grows by less than 256 kB from the end of round 1 to the
end of round 4 (9 more sessions, 8,100 more frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fuzz_checks import check_error_event, strict_loads
from fuzz_frames import RandomPicker, audio_b64, frame
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import Relay, relay_settings, running_relay, token
from test_fuzz_local_session import error_logs
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

LIMIT = 65_536
ROUNDS, CONNECTIONS, FRAMES, BATCH = 4, 3, 900, 30
UPSTREAM_ERROR_CODES = frozenset({"item_not_found"})  # the scripted upstream's own errors, passed through
MEMORY_GROWTH_BYTES = 256 * 1024
SETTLE_S = 10.0


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as fake:
        yield fake


def settings_for(url: str) -> Any:
    return relay_settings(
        url,
        max_frame_bytes=LIMIT,
        max_audio_rate=1e9,  # no audio_rate_limited errors: every error is about a frame's content
        audio_burst_ms=10**9,
        max_concurrent_sessions=CONNECTIONS,
        sessions_per_hour=10_000,
    )


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(SETTLE_S):
        data = await ws.recv()
    assert isinstance(data, str)
    event = strict_loads(data)
    assert isinstance(event, dict)
    return event


async def until(
    ws: ClientConnection, type_: str, **match: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    while True:
        event = await recv_json(ws)
        if event["type"] == type_ and all(event.get(k) == v for k, v in match.items()):
            return event, seen
        seen.append(event)


async def fuzz_connection(relay: Relay, seed: int) -> int:
    """One session: FRAMES fuzz frames and audio appends, checked batch by batch; then a typed turn. Returns how
    many frames were sent."""
    pick = RandomPicker(seed)
    ws = await relay.connect(token(f"fuzz-{seed}"))
    sent = 0
    try:
        await until(ws, "session.created")
        for batch in range(FRAMES // BATCH):
            refuse = maybe = 0
            for _ in range(BATCH):
                if pick.integer(0, 4) == 0:
                    data: str | bytes = json.dumps(
                        {"type": "input_audio_buffer.append", "audio": audio_b64(pick)}
                    )
                else:
                    f = frame(pick, LIMIT)
                    data = f.data
                    refuse += f.relay == "refuse"
                    maybe += f.relay == "any"
                await ws.send(data)
                sent += 1
            probe = f"probe-{seed}-{batch}"
            await ws.send(json.dumps({"type": "fuzz.probe", "event_id": probe}))
            while True:
                event = await recv_json(ws)
                if event["type"] != "error" or event["error"].get("code") in UPSTREAM_ERROR_CODES:
                    continue
                err = check_error_event(event)
                if err["event_id"] == probe:
                    break
                if refuse:
                    refuse -= 1
                else:
                    maybe -= 1
            assert refuse == 0, f"seed {seed} batch {batch}: {refuse} refused frames got no error"
            assert maybe >= 0, f"seed {seed} batch {batch}: more errors than frames that may be refused"
        await still_answers(ws, f"still there, {seed}?")
    except ConnectionClosed as exc:
        pytest.fail(f"seed {seed}: the relay closed the session ({exc.rcvd})")
    finally:
        await close(ws)
    return sent


async def still_answers(ws: ClientConnection, question: str) -> None:
    """A typed question and a response.create get an answer: the first response created after the question's
    item is added runs to completion (answers to fuzzed response.creates may still be streaming)."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": question}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    while True:
        added, _ = await until(ws, "conversation.item.added")
        if added["item"].get("content") == item["content"]:
            break
    created, _ = await until(ws, "response.created")
    while True:
        done, _ = await until(ws, "response.done")
        if done["response"]["id"] == created["response"]["id"]:
            assert done["response"]["status"] == "completed", done
            return


async def close(ws: ClientConnection) -> None:
    """Close while reading what is still coming: a client that stops reading with frames queued pauses its
    transport and only sees the server's close after its close_timeout."""

    async def drain() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    reader = asyncio.create_task(drain())
    await ws.close()
    await reader


async def protocol_breaker(relay: Relay, seed: int, data: bytes, code: int) -> None:
    """A frame that breaks the WebSocket protocol itself: the relay closes with ``code`` (not 1011)."""
    ws = await relay.connect(token(f"breaker-{seed}"))
    await until(ws, "session.created")
    await ws.send(data, text=True)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await recv_json(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, closed.value


async def settled(relay: Relay, tasks_before: int) -> None:
    """Every session gone and the loop back to its task count before the first connect (awaited, bounded)."""
    deadline = time.monotonic() + SETTLE_S
    while relay.state.sessions or len(asyncio.all_tasks()) > tasks_before:
        assert time.monotonic() < deadline, (
            len(relay.state.sessions),
            len(asyncio.all_tasks()),
            tasks_before,
        )
        await asyncio.sleep(0.02)


def forget_history(upstream: FakeUpstream) -> None:
    """The scripted upstream keeps every event of every connection for its tests' assertions: not the relay's
    memory, and not wanted here."""
    for name in ("received", "conversations", "headers", "paths"):
        history = getattr(upstream, name, None)
        if isinstance(history, list):
            history.clear()


_NOT_OURS = [
    tracemalloc.Filter(False, logging.__file__),
    tracemalloc.Filter(False, "*/_pytest/*"),
    tracemalloc.Filter(False, tracemalloc.__file__),
]


def held_bytes() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_OURS)
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_ten_thousand_hostile_frames_over_real_sockets(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest keeps every log record of a test for its report; after a test that ran setup_logging (root at INFO)
    # the sessions' INFO lines would be held there and counted as the relay's memory. Errors are what is checked.
    caplog.set_level(logging.WARNING)
    with error_logs() as logged:
        async with running_relay(settings_for(upstream.url)) as relay:
            tasks_before = len(asyncio.all_tasks())
            tracemalloc.start()
            try:
                sizes, total = [], 0
                for r in range(ROUNDS):
                    counts = await asyncio.gather(
                        *(fuzz_connection(relay, r * CONNECTIONS + c) for c in range(CONNECTIONS))
                    )
                    total += sum(counts)
                    await settled(relay, tasks_before)
                    forget_history(upstream)
                    sizes.append(held_bytes())
            finally:
                tracemalloc.stop()
            await protocol_breaker(relay, 2, b'{"type":"x","pad":"' + b"A" * (2 << 20) + b'"}', 1009)
            await settled(relay, tasks_before)
    assert total >= 10_000
    growth = sizes[-1] - sizes[0]
    assert growth < MEMORY_GROWTH_BYTES, f"held memory per round: {sizes}"
    assert not logged.records, [r.getMessage() for r in logged.records]


INVALID_UTF8_TEXT = b'{"type":"input_audio_buffer.clear","x":"\xff\xfe"}'


async def test_invalid_utf8_text_frame_is_closed_1007_and_cleaned_up(upstream: FakeUpstream) -> None:
    async with running_relay(settings_for(upstream.url)) as relay:
        tasks_before = len(asyncio.all_tasks())
        await protocol_breaker(relay, 1, INVALID_UTF8_TEXT, 1007)
        await settled(relay, tasks_before)


async def test_invalid_utf8_text_frame_is_not_logged_as_an_error(upstream: FakeUpstream) -> None:
    with error_logs() as logged:
        async with running_relay(settings_for(upstream.url)) as relay:
            await protocol_breaker(relay, 1, INVALID_UTF8_TEXT, 1007)
    assert not logged.records, [r.getMessage() for r in logged.records]
