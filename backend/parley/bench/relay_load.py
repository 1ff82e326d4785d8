"""The load generator of ``parley bench relay``: one process driving a share of the concurrent sessions.

Run as ``python -m parley.bench.relay_load JOB.json RESULT.json`` (uvloop). The job names the URL, the per-session
headers, this worker's session indices out of the level's total, and a timeline in wall-clock seconds shared by all
workers of a level: ``start_at`` (first connect), ``ramp_s`` (connects spread evenly over it), ``warm_s``
(streaming, not counted), ``measure_s`` (counted), ``drain_s`` (late replies still collected).

Each session streams PCM16 24 kHz audio in real time: one ``input_audio_buffer.append`` per ``chunk_ms``. The
first 12 bytes of every chunk carry a magic and a sequence number, so the echoed ``response.output_audio.delta``
is matched to its append whatever the relay does to ids. The round trip is append sent → matching delta received,
counted for appends sent inside the measure window.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MAGIC = b"PRLY"
HEADER = struct.Struct("<4sQ")  # 12 bytes: a multiple of 3, so its base64 is a fixed 16-character prefix
MAX_OUTSTANDING = 1000  # appends awaiting their delta per session; past it the session stops sending
FIRST_EVENT_TIMEOUT_S = 5.0
MAX_ERROR_KINDS = 20


@dataclass
class Job:
    url: str
    headers: list[dict[str, str]]
    indices: list[int]
    total: int
    start_at: float
    ramp_s: float
    warm_s: float
    measure_s: float
    drain_s: float = 2.0
    chunk_ms: int = 100
    compression: bool = True
    connect_timeout_s: float = 10.0


@dataclass
class Result:
    rtt_ms: list[float] = field(default_factory=list)
    rtt_at_s: list[float] = field(default_factory=list)  # when each counted append left, s into the window
    late_ms: list[float] = field(default_factory=list)  # how late each counted append left vs its schedule
    sent: int = 0  # appends sent inside the measure window
    lost: int = 0  # of those, never answered before the drain deadline
    unmatched: int = 0  # deltas that matched no outstanding append
    sessions_ok: int = 0
    sessions_failed: int = 0
    sessions_deflate: int = 0  # sessions on which the server accepted permessage-deflate
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = math.nan  # this process's CPU time during the measure window

    def error(self, what: str) -> None:
        if what in self.errors or len(self.errors) < MAX_ERROR_KINDS:
            self.errors[what] = self.errors.get(what, 0) + 1


def audio_body(chunk_ms: int) -> bytes:
    """A quiet 440 Hz tone: the chunk's PCM without its 12-byte header."""
    n = chunk_ms * 24
    t = np.arange(n, dtype=np.float32) / 24_000.0
    pcm = (0.1 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2").tobytes()
    return pcm[HEADER.size :]


def append_event(seq: int, body_b64: str) -> str:
    head = base64.b64encode(HEADER.pack(MAGIC, seq)).decode("ascii")
    return f'{{"type":"input_audio_buffer.append","event_id":"event_b{seq}","audio":"{head}{body_b64}"}}'


def delta_seq(delta: str) -> int | None:
    """The sequence number carried by an echoed chunk, or None when it is not one of ours."""
    try:
        magic, seq = HEADER.unpack(base64.b64decode(delta[:16]))
    except (ValueError, struct.error):
        return None
    return int(seq) if magic == MAGIC else None


class Session:
    def __init__(self, job: Job, index: int, headers: dict[str, str], body_b64: str, res: Result, clock: Any):
        self.job, self.index, self.headers, self.body_b64, self.res = job, index, headers, body_b64, res
        self.mono = clock  # wall-clock seconds -> perf_counter seconds
        self.win_start = clock(job.start_at + job.ramp_s + job.warm_s)
        self.win_end = self.win_start + job.measure_s
        self.outstanding: dict[int, float] = {}
        self.sender_done = asyncio.Event()

    async def run(self) -> None:
        from websockets.asyncio.client import connect

        job = self.job
        await _sleep_until(self.mono(job.start_at + job.ramp_s * self.index / max(1, job.total)))
        try:
            async with asyncio.timeout_at(_loop_time_at(self.win_end + job.drain_s + job.connect_timeout_s)):
                async with connect(
                    job.url,
                    additional_headers=self.headers,
                    compression="deflate" if job.compression else None,
                    max_size=1 << 20,
                    open_timeout=job.connect_timeout_s,
                ) as ws:
                    if ws.protocol.extensions:
                        self.res.sessions_deflate += 1
                    await self._stream(ws)
            self.res.sessions_ok += 1
        except Exception as exc:  # a session's failure is a result, not a crash of the bench
            while isinstance(exc, ExceptionGroup) and exc.exceptions:
                exc = exc.exceptions[0]
            self.res.sessions_failed += 1
            self.res.error(f"{type(exc).__name__}: {str(exc)[:120]}")
        finally:
            in_window = sum(1 for t in self.outstanding.values() if self.win_start <= t < self.win_end)
            self.res.lost += in_window

    async def _stream(self, ws: Any) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_EVENT_TIMEOUT_S):
                first = json.loads(await ws.recv())
                if first.get("type") == "error":
                    self.res.error(f"error event: {str(first.get('error'))[:120]}")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send(ws))
            tg.create_task(self._receive(ws))

    async def _send(self, ws: Any) -> None:
        step = self.job.chunk_ms / 1000.0
        start = time.perf_counter()
        max_chunks = int((self.win_end - start) / step) + 1
        try:
            for seq in range(max(0, max_chunks)):
                due = start + seq * step
                await _sleep_until(due)
                now = time.perf_counter()
                if now >= self.win_end or len(self.outstanding) >= MAX_OUTSTANDING:
                    break
                self.outstanding[seq] = now
                if now >= self.win_start:
                    self.res.sent += 1
                    self.res.late_ms.append((now - due) * 1000.0)
                await ws.send(append_event(seq, self.body_b64))
        finally:
            self.sender_done.set()

    async def _receive(self, ws: Any) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(_loop_time_at(self.win_end + self.job.drain_s)):
                async for raw in ws:
                    now = time.perf_counter()
                    event = json.loads(raw)
                    kind = event.get("type")
                    if kind == "response.output_audio.delta":
                        seq = delta_seq(str(event.get("delta", "")))
                        sent_at = self.outstanding.pop(seq, None) if seq is not None else None
                        if sent_at is None:
                            self.res.unmatched += 1
                        elif self.win_start <= sent_at < self.win_end:
                            self.res.rtt_ms.append((now - sent_at) * 1000.0)
                            self.res.rtt_at_s.append(sent_at - self.win_start)
                    elif kind == "error":
                        self.res.error(f"error event: {str(event.get('error'))[:120]}")
                    if self.sender_done.is_set() and not self.outstanding:
                        break


def _loop_time_at(perf_t: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (perf_t - time.perf_counter())


async def _sleep_until(perf_t: float) -> None:
    delay = perf_t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _measure_cpu(res: Result, win_start: float, win_end: float) -> None:
    await _sleep_until(win_start)
    cpu0 = time.process_time()
    await _sleep_until(win_end)
    res.cpu_s = time.process_time() - cpu0


async def run_job(job: Job) -> Result:
    """Drive this worker's sessions through the job's timeline; returns what it measured."""
    offset = time.perf_counter() - time.time()

    def clock(wall: float) -> float:
        return wall + offset

    res = Result()
    body_b64 = base64.b64encode(audio_body(job.chunk_ms)).decode("ascii")
    sessions = [
        Session(job, i, h, body_b64, res, clock) for i, h in zip(job.indices, job.headers, strict=True)
    ]
    win_start = clock(job.start_at + job.ramp_s + job.warm_s)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_measure_cpu(res, win_start, win_start + job.measure_s))
        for s in sessions:
            tg.create_task(s.run())
    return res


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job = Job(**json.loads(Path(args[0]).read_text()))
    import uvloop

    res = uvloop.run(run_job(job))
    Path(args[1]).write_text(json.dumps(asdict(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
