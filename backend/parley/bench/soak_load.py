"""The clients of ``parley bench soak``: sessions that stream audio in real time and misbehave on purpose.

Each slot keeps one session open at a time: it connects, waits for ``session.created``, then sends one
100 ms ``input_audio_buffer.append`` per 100 ms; on each tick it may barge in (``response.cancel`` or
``input_audio_buffer.clear``) or send a bad frame (one of ``BAD_FRAMES``, each of which the relay must answer with
exactly one ``error``); after a random lifetime it closes and reconnects, until the run ends. Every event received
is counted; an error the slot did not provoke, or a close it did not ask for, is counted as unexpected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

CHUNK_MS = 100
AUDIO = base64.b64encode(b"\x10\x00" * (24 * CHUNK_MS)).decode()
APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": AUDIO})
BARGE_INS = (json.dumps({"type": "response.cancel"}), json.dumps({"type": "input_audio_buffer.clear"}))
BAD_FRAMES: tuple[str | bytes, ...] = (
    "not json at all",
    "[1, 2, 3]",
    '{"type":"session.create"}',
    '{"type":"input_audio_buffer.append","audio":5}',
    '{"type":"input_audio_buffer.clear","type":"session.update"}',
    '{"type":"input_audio_buffer.clear","x":NaN}',
    '{"type":"input_audio_buffer.clear","event_id":"\\ud800"}',
    "[" * 5_000 + "]" * 5_000,
    b'{"type":"input_audio_buffer.commit","x":"\xff\xfe"}',
)
P_BARGE_IN = 0.02  # per 100 ms tick: one every 5 s on average
P_BAD_FRAME = 0.02
MAX_ERROR_KINDS = 20


@dataclass
class Tally:
    connects: int = 0
    connect_failures: int = 0
    appends: int = 0
    deltas: int = 0
    barge_ins: int = 0
    bad_frames: int = 0
    bad_frame_errors: int = 0
    unexpected_errors: dict[str, int] = field(default_factory=dict)
    unexpected_closes: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], key: str) -> None:
        if key in table or len(table) < MAX_ERROR_KINDS:
            table[key] = table.get(key, 0) + 1


@dataclass(frozen=True)
class Plan:
    url: str
    token: Callable[[str], str]  # user id -> JWT
    end_at: float  # time.monotonic() when every slot stops
    lifetime_s: tuple[float, float]  # a session lives this long (uniform), then the slot reconnects


async def run_slot(plan: Plan, slot: int, rng: random.Random, tally: Tally) -> None:
    """Sessions one after another until ``plan.end_at``."""
    n = 0
    while time.monotonic() < plan.end_at:
        n += 1
        lifetime = rng.uniform(*plan.lifetime_s)
        until = min(plan.end_at, time.monotonic() + lifetime)
        try:
            await _session(plan, f"soak-{slot}-{n}", until, rng, tally)
        except (OSError, TimeoutError) as exc:
            tally.connect_failures += 1
            logger.warning("slot %d: session %d failed to connect: %r", slot, n, exc)
            await asyncio.sleep(1.0)


async def _session(plan: Plan, user: str, until: float, rng: random.Random, tally: Tally) -> None:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {plan.token(user)}"}
    async with connect(plan.url, additional_headers=headers, max_size=1 << 21, open_timeout=10) as ws:
        tally.connects += 1
        async with asyncio.timeout(10):
            while json.loads(await ws.recv()).get("type") != "session.created":
                pass
        closing = asyncio.Event()
        reader = asyncio.create_task(_read(ws, tally, closing, user))
        try:
            next_at = time.monotonic()
            while time.monotonic() < until and not reader.done():
                await ws.send(APPEND)
                tally.appends += 1
                roll = rng.random()
                if roll < P_BARGE_IN:
                    await ws.send(rng.choice(BARGE_INS))
                    tally.barge_ins += 1
                elif roll < P_BARGE_IN + P_BAD_FRAME:
                    await ws.send(rng.choice(BAD_FRAMES))
                    tally.bad_frames += 1
                next_at += CHUNK_MS / 1000.0
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            closing.set()
            with contextlib.suppress(Exception):
                await ws.close()
            await reader


async def _read(ws: object, tally: Tally, closing: asyncio.Event, user: str) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for raw in ws:  # type: ignore[attr-defined]
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "response.output_audio.delta":
                tally.deltas += 1
            elif kind == "error":
                code = str(event.get("error", {}).get("code"))
                if code in ("invalid_json", "event_not_allowed", "invalid_request"):
                    tally.bad_frame_errors += 1
                else:
                    tally.count(tally.unexpected_errors, code)
    except ConnectionClosed as exc:
        if not closing.is_set():
            tally.count(tally.unexpected_closes, str(exc.rcvd.code) if exc.rcvd is not None else "none")
            logger.warning("%s: the relay closed the session (%s)", user, exc.rcvd)
