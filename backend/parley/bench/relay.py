"""``parley bench relay``: the latency and CPU the relay adds, at several levels of concurrent sessions.

Three kinds of process, so none shares an event loop or a CPU account with another:
- a fast scripted upstream (:mod:`parley.bench.fast_upstream`) that echoes every appended audio chunk back at once
  as a ``response.output_audio.delta``;
- the relay under test (``parley serve``), pointed at that upstream as its local voice server;
- one or more load generators (:mod:`parley.bench.relay_load`, uvloop), each driving a share of the sessions.

Every level runs twice with the same load: DIRECT to the upstream, then THROUGH the relay. The added latency is
relay minus direct, per percentile. CPU of each process comes from ``/proc/<pid>/stat`` over the measure window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from parley.bench.relay_load import Job, Result
from parley.bench.report import summary
from parley.procs import ChildProcess, free_port
from parley.settings import Settings

logger = logging.getLogger(__name__)

CHUNK_MS = 100
# The ramp: connects are spread at this rate, so the connect storm is not what gets measured.
CONNECTS_PER_S = 50.0
WARM_S = 2.0
DRAIN_S = 2.0
STARTUP_S = 3.0  # time given to the load generators to start before the first connect
SESSIONS_PER_WORKER = 100
SATURATED_CPU_PCT = 85.0  # a load generator above this share of one core measures itself, not the relay
SATURATED_LATE_MS = 20.0  # ... and so does one whose appends leave this late (p99) against their schedule
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int | Sequence[int] | None) -> float:
    """User+system CPU seconds of a process (all its threads), or the sum of several; NaN when it cannot be read."""
    if pid is None:
        return math.nan
    if not isinstance(pid, int):
        return sum(proc_cpu_s(p) for p in pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of proc(5))


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies summed over all cores, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return math.nan, math.nan
    vals = [float(v) for v in first[:8]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


class CpuWatch:
    """CPU% (of one core) of named processes, and the machine's busy share, between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int | Sequence[int] | None]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}
        self._m0 = (math.nan, math.nan)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {k: proc_cpu_s(p) for k, p in self.pids.items()}
        self._m0 = machine_cpu()

    def stop(self) -> dict[str, float]:
        wall = max(1e-6, time.monotonic() - self._t0)
        out = {k: 100.0 * (proc_cpu_s(p) - self._cpu0[k]) / wall for k, p in self.pids.items()}
        busy, total = machine_cpu()
        out["machine_busy_pct"] = 100.0 * (busy - self._m0[0]) / max(1e-6, total - self._m0[1])
        out["cores"] = float(os.cpu_count() or 1)
        return out


def other_load_pct(cpu: dict[str, Any]) -> float:
    """CPU (% of one core) used during the window by processes other than the bench's own: the noise."""
    ours = sum(v for k, v in cpu.items() if k in ("relay", "upstream") and not math.isnan(v))
    ours += sum(cpu.get("loadgen", []))
    return max(0.0, cpu["machine_busy_pct"] * cpu["cores"] - ours)


@contextlib.asynccontextmanager
async def fast_upstream(log_dir: Path, lifetime_s: float = 3600.0) -> AsyncIterator[tuple[str, ChildProcess]]:
    """Start the fast upstream in its own process; yields its ws URL and the process."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "parley.bench.fast_upstream",
        "--port",
        str(port),
        "--lifetime-s",
        str(lifetime_s),
    ]
    child = ChildProcess(
        "fast-upstream",
        argv,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout_s=30.0,
        log_path=log_dir / "fast-upstream.log",
    )
    async with child:
        yield f"ws://127.0.0.1:{port}/v1/realtime", child


def process_tree(pid: int | None) -> list[int]:
    """``pid`` and its children (a ``parley serve --workers N`` and its workers)."""
    if pid is None:
        return []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(int(c) for c in children)]


@contextlib.asynccontextmanager
async def redis_for_workers(settings: Settings, log_dir: Path) -> AsyncIterator[str]:
    """The Redis the relay's workers share: ``PARLEY_REDIS_URL``, or a throw-away ``redis-server`` (no persistence)
    on a free loopback port."""
    if settings.redis_url:
        yield settings.redis_url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("--workers > 1 needs Redis: set PARLEY_REDIS_URL or install redis-server")
    port = free_port()
    with (log_dir / "redis.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with asyncio.timeout(STARTUP_S * 10):
            while not await _answers_ping(port):
                if proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited with code {proc.returncode}")
                await asyncio.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def _answers_ping(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        return (await reader.readline()).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        writer.close()


def relay_env(upstream_url: str, secret: str, redis_url: str = "") -> dict[str, str]:
    """The relay's environment: ours, pointed at the fast upstream, with limits no bench session reaches."""
    env = dict(os.environ)
    env.update(
        PARLEY_JWT_SECRET=secret,
        PARLEY_LOCAL_REALTIME_URL=upstream_url,
        PARLEY_REDIS_URL=redis_url,
        PARLEY_MAX_CONCURRENT_SESSIONS="100000",
        PARLEY_SESSIONS_PER_HOUR="1000000",
        PARLEY_IDLE_TIMEOUT_S="300",
    )
    return env


@contextlib.asynccontextmanager
async def relay_process(
    upstream_url: str, secret: str, log_dir: Path, *, workers: int = 1, redis_url: str = ""
) -> AsyncIterator[tuple[str, ChildProcess]]:
    """Start ``parley serve [--workers N]`` in its own process(es); yields its /ws/voice URL and the process."""
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers)]
    child = ChildProcess(
        "relay",
        argv,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=relay_env(upstream_url, secret, redis_url),
        ready_timeout_s=60.0,
        log_path=log_dir / "relay.log",
    )
    async with child:
        yield f"ws://127.0.0.1:{port}/ws/voice?provider=local", child


def mint(settings: Settings, user: str) -> str:
    from parley.relay.auth import mint_token

    return mint_token(settings, user, ttl_s=3600)


async def _run_worker(job: Job, work: Path, name: str, timeout_s: float) -> tuple[Result, int | None]:
    job_path, res_path, log_path = (
        work / f"{name}.job.json",
        work / f"{name}.result.json",
        work / f"{name}.log",
    )
    job_path.write_text(json.dumps(asdict(job)))
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley.bench.relay_load", str(job_path), str(res_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"load generator {name} overran {timeout_s:.0f} s; see {log_path}") from None
    if proc.returncode != 0 or not res_path.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"load generator {name} failed (exit {proc.returncode}):\n{tail}")
    return Result(**json.loads(res_path.read_text())), proc.pid


async def measure(
    url: str,
    headers: Sequence[dict[str, str]],
    *,
    seconds: float,
    workers: int | None = None,
    ramp_s: float | None = None,
    warm_s: float = WARM_S,
    compression: bool = True,
    watch: dict[str, int | Sequence[int] | None] | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``len(headers)`` concurrent streaming sessions against ``url``; returns the merged measurements."""
    total = len(headers)
    workers = max(1, min(total, workers or math.ceil(total / SESSIONS_PER_WORKER)))
    ramp_s = max(0.2, total / CONNECTS_PER_S) if ramp_s is None else ramp_s
    start_at = time.time() + STARTUP_S
    win_start = start_at + ramp_s + warm_s
    shares = [list(range(w, total, workers)) for w in range(workers)]  # interleaved, so connects alternate
    jobs = [
        Job(url=url, headers=[headers[i] for i in idx], indices=idx, total=total, start_at=start_at,
            ramp_s=ramp_s, warm_s=warm_s, measure_s=seconds, drain_s=DRAIN_S, chunk_ms=CHUNK_MS,
            compression=compression)
        for idx in shares
    ]  # fmt: skip
    timeout_s = STARTUP_S + ramp_s + warm_s + seconds + DRAIN_S + 60.0
    cpu = CpuWatch(dict(watch or {}))

    async def watch_window() -> dict[str, float]:
        await asyncio.sleep(max(0.0, win_start - time.time()))
        cpu.start()
        await asyncio.sleep(max(0.0, win_start + seconds - time.time()))
        return cpu.stop()

    with contextlib.ExitStack() as stack:
        work = work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-bench-relay-"))
        )
        async with asyncio.TaskGroup() as tg:
            cpu_task = tg.create_task(watch_window())
            runs = [
                tg.create_task(_run_worker(j, work, f"loadgen{i}", timeout_s)) for i, j in enumerate(jobs)
            ]
    return merge([r.result()[0] for r in runs], cpu_task.result(), seconds=seconds)


def merge(results: Sequence[Result], cpu: dict[str, float], *, seconds: float) -> dict[str, Any]:
    rtt = [x for r in results for x in r.rtt_ms]
    late = [x for r in results for x in r.late_ms]
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    loadgen_pct = [100.0 * r.cpu_s / seconds for r in results]
    at = [x for r in results for x in r.rtt_at_s]
    per_s = [0.0] * max(1, math.ceil(seconds))
    for t, ms in zip(at, rtt, strict=True):
        i = min(len(per_s) - 1, max(0, int(t)))
        per_s[i] = max(per_s[i], ms)
    late_s = summary(late)
    saturated = any(p >= SATURATED_CPU_PCT for p in loadgen_pct) or late_s["p99"] > SATURATED_LATE_MS
    return {
        "rtt_ms": summary(rtt),
        "rtt_max_ms_per_s": per_s,  # the worst round trip in each second of the window: shows stalls
        "late_ms": late_s,
        "sent": sum(r.sent for r in results),
        "received": len(rtt),
        "lost": sum(r.lost for r in results),
        "unmatched": sum(r.unmatched for r in results),
        "sessions_ok": sum(r.sessions_ok for r in results),
        "sessions_failed": sum(r.sessions_failed for r in results),
        "sessions_deflate": sum(r.sessions_deflate for r in results),
        "errors": errors,
        "cpu_pct": {**cpu, "loadgen": loadgen_pct, "other": other_load_pct({**cpu, "loadgen": loadgen_pct})},
        "loadgen_saturated": saturated,
        "rtt_samples_ms": rtt,
        "rtt_at_s": at,
    }


async def run_relay_bench(
    settings: Settings,
    *,
    levels: Sequence[int],
    seconds: float,
    out: str | Path,
    compression: bool = True,
    workers: int | None = None,
    relay_workers: int = 1,
) -> int:
    """Measure every level direct and through the relay; write relay.json, relay.png and the doc section.
    ``workers``: load-generator processes per level (default: one per 100 sessions); ``relay_workers``: the relay's
    worker processes (``parley serve --workers N``; above 1 with Redis, see ``redis_for_workers``)."""
    from parley.bench.relay_report import write_report

    levels = [n for n in levels if n > 0]
    if not levels or seconds <= 0:
        logger.error("nothing to run: levels=%s seconds=%s", levels, seconds)
        return 2
    out = Path(out)
    secret = secrets.token_urlsafe(32)
    token_settings = settings.model_copy(update={"jwt_secret": type(settings.jwt_secret)(secret)})
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-relay-") as tmp:
        logs = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            redis_url = ""
            if relay_workers > 1:
                redis_url = await stack.enter_async_context(redis_for_workers(settings, logs))
            up_url, up = await stack.enter_async_context(fast_upstream(logs))
            relay_url, relay = await stack.enter_async_context(
                relay_process(up_url, secret, logs, workers=relay_workers, redis_url=redis_url)
            )
            relay_pids = process_tree(relay.pid)  # the parent and its workers, once ready
            for n in levels:
                run: dict[str, Any] = {"sessions": n}
                for mode, url in (("direct", up_url), ("relay", relay_url)):
                    tag = f"bench-{n}-{mode}-{secrets.token_hex(3)}"
                    headers = [
                        {"Authorization": f"Bearer {mint(token_settings, f'{tag}-{i}')}"} for i in range(n)
                    ]
                    logger.info("level %d sessions, %s: %.0f s measured", n, mode, seconds)
                    run[mode] = await measure(
                        url, headers, seconds=seconds, workers=workers, compression=compression,
                        watch={"relay": relay_pids, "upstream": up.pid},
                    )  # fmt: skip
                    _log_run(n, mode, run[mode])
                    if mode == "relay" and (run[mode]["errors"] or run[mode]["sessions_failed"]):
                        logger.warning("relay log tail:\n%s", relay.tail(10))
                    await asyncio.sleep(1.0)  # let the sessions of this run close before the next
                runs.append(run)
    setup = {
        "chunk_ms": CHUNK_MS,
        "seconds_measured": seconds,
        "warm_s": WARM_S,
        "connects_per_s": CONNECTS_PER_S,
        "sessions_per_load_generator": SESSIONS_PER_WORKER,
        "client_offers_permessage_deflate": compression,
        "relay_workers": relay_workers,
    }
    write_report(runs, out, setup=setup)
    ok = all(r[m]["received"] > 0 for r in runs for m in ("direct", "relay"))
    return 0 if ok else 1


def _log_run(n: int, mode: str, m: dict[str, Any]) -> None:
    cpu = m["cpu_pct"]
    logger.info(
        "%d sessions %s: rtt p50 %.2f ms p99 %.2f ms (n=%d, lost %d, failed sessions %d); cpu%% relay %.0f "
        "upstream %.0f loadgen %s machine %.0f%%%s",
        n, mode, m["rtt_ms"]["p50"], m["rtt_ms"]["p99"], m["received"], m["lost"], m["sessions_failed"],
        cpu.get("relay", math.nan), cpu.get("upstream", math.nan), [round(p) for p in cpu["loadgen"]],
        cpu.get("machine_busy_pct", math.nan), " (LOAD GENERATOR FELL BEHIND)" if m["loadgen_saturated"] else "",
    )  # fmt: skip
    if m["errors"]:
        logger.warning("%d sessions %s: errors %s", n, mode, m["errors"])
