"""``parley bench soak``: N sessions for M minutes through a real relay, then: did anything grow?

Processes: the fast scripted upstream (``parley.bench.fast_upstream``, as ``parley bench relay`` runs it), the
relay (``parley.bench.soak_relay``: ``parley serve``'s app with a stats route) and this one, which drives the
sessions (``parley.bench.soak_load``: real-time audio, random barge-ins, bad frames, reconnects) and samples the
relay's RSS, open fds, asyncio tasks and live sessions every ``interval`` seconds.

Flat (``verdict``): the median RSS of the last quarter of the load is within ``RSS_TOLERANCE`` of the second
quarter's; once every client has gone, the relay has no session left and its fds and tasks are back to what they
were before the first connect; no connect failed, no error or close came that the clients did not provoke, and
every bad frame got its error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from parley.bench.relay import fast_upstream, mint, relay_env
from parley.bench.soak_load import Plan, Tally, run_slot
from parley.bench.soak_relay import STATS_PATH
from parley.procs import ChildProcess, free_port
from parley.settings import Settings

logger = logging.getLogger(__name__)

RSS_TOLERANCE = 0.05
SETTLE_TIMEOUT_S = 30.0
RAMP_S = 5.0  # the slots start spread over this long


async def _relay(upstream_url: str, secret: str, log_dir: Path) -> tuple[str, str, ChildProcess]:
    port = free_port()
    argv = [sys.executable, "-m", "parley.bench.soak_relay", "--host", "127.0.0.1", "--port", str(port)]
    env = relay_env(upstream_url, secret)
    env.update(PARLEY_RAG_ENABLED="false", PARLEY_LOG_JSON="false")
    child = ChildProcess(
        "soak-relay",
        argv,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        env=env,
        ready_timeout_s=60.0,
        log_path=log_dir / "relay.log",
    )
    return f"ws://127.0.0.1:{port}/ws/voice?provider=local", f"http://127.0.0.1:{port}{STATS_PATH}", child


class Sampler:
    """The relay's stats over time, ``t`` in seconds from the start of the load."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.samples: list[dict[str, float]] = []
        self.t0 = time.monotonic()

    async def sample(self, phase: str) -> dict[str, Any]:
        stats = (await self.client.get(self.url)).json()
        row = {"t": round(time.monotonic() - self.t0, 2), "phase": phase, **stats}
        self.samples.append(row)
        return row

    async def every(self, interval_s: float, until: float) -> None:
        while time.monotonic() < until:
            await self.sample("load")
            await asyncio.sleep(interval_s)

    async def settled(self, baseline: dict[str, Any]) -> dict[str, Any]:
        """Sample until no session is left and fds and tasks are back to the baseline (or the timeout)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            row = await self.sample("after")
            back = row["fds"] <= baseline["fds"] and row["tasks"] <= baseline["tasks"]
            if (row["sessions"] == 0 and back) or time.monotonic() > deadline:
                return row
            await asyncio.sleep(0.5)


def verdict(
    samples: list[dict[str, Any]], baseline: dict[str, Any], end: dict[str, Any], tally: Tally
) -> dict[str, Any]:
    load = [s for s in samples if s["phase"] == "load"]
    q = max(1, len(load) // 4)
    second = statistics.median(s["rss_kb"] for s in load[q : 2 * q] or load)
    last = statistics.median(s["rss_kb"] for s in load[-q:])
    rss_change = (last - second) / second
    checks = {
        "rss_flat": abs(rss_change) <= RSS_TOLERANCE,
        "sessions_back_to_zero": end["sessions"] == 0,
        "fds_back_to_baseline": end["fds"] <= baseline["fds"],
        "tasks_back_to_baseline": end["tasks"] <= baseline["tasks"],
        "no_connect_failures": tally.connect_failures == 0,
        "no_unexpected_errors": not tally.unexpected_errors,
        "no_unexpected_closes": not tally.unexpected_closes,
        "every_bad_frame_answered": tally.bad_frame_errors == tally.bad_frames,
    }
    return {
        "flat": all(checks.values()),
        "checks": checks,
        "rss_second_quarter_median_mb": second / 1024,
        "rss_last_quarter_median_mb": last / 1024,
        "rss_change_pct": 100 * rss_change,
        "rss_max_mb": max(s["rss_kb"] for s in load) / 1024,
        "baseline": baseline,
        "end": end,
        "peak_sessions": max(s["sessions"] for s in load),
        "peak_tasks": max(s["tasks"] for s in load),
        "peak_fds": max(s["fds"] for s in load),
    }


async def soak(
    sessions: int, seconds: float, *, seed: int = 1, interval_s: float | None = None
) -> dict[str, Any]:
    """Run the soak; returns the samples, the clients' tally and the verdict."""
    secret = secrets.token_urlsafe(32)
    token_settings = Settings(jwt_secret=SecretStr(secret))
    interval_s = interval_s or max(1.0, seconds / 300)
    lifetime = (min(5.0, seconds / 4), min(60.0, max(5.0, seconds / 2)))
    tally = Tally()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="parley-bench-soak-") as tmp:
        logs = Path(tmp)
        async with fast_upstream(logs, lifetime_s=seconds + 600) as (up_url, _up):
            relay_url, stats_url, relay = await _relay(up_url, secret, logs)
            async with relay, httpx.AsyncClient(timeout=5.0) as client:
                sampler = Sampler(client, stats_url)
                await sampler.sample("before")  # the sampler's own connection is open from here on
                baseline = await sampler.sample("before")
                end_at = time.monotonic() + seconds
                plan = Plan(relay_url, lambda user: mint(token_settings, user), end_at, lifetime)
                logger.info(
                    "soak: %d sessions for %.0f s (samples every %.1f s)", sessions, seconds, interval_s
                )
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(sampler.every(interval_s, end_at))
                    for i in range(sessions):
                        slot_rng = random.Random(rng.random())
                        tg.create_task(_start_slot(plan, i, i * RAMP_S / max(1, sessions), slot_rng, tally))
                end = await sampler.settled(baseline)
                if end["sessions"]:
                    logger.warning("relay log tail:\n%s", relay.tail(20))
    result = {
        "setup": {"sessions": sessions, "seconds": seconds, "seed": seed, "interval_s": interval_s,
                  "lifetime_s": list(lifetime), "chunk_ms": 100},
        "tally": tally.__dict__,
        "samples": sampler.samples,
    }  # fmt: skip
    result["verdict"] = verdict(sampler.samples, baseline, end, tally)
    return result


async def _start_slot(plan: Plan, slot: int, delay_s: float, rng: random.Random, tally: Tally) -> None:
    await asyncio.sleep(delay_s)
    await run_slot(plan, slot, rng, tally)


async def run_soak_bench(settings: Settings, *, sessions: int, minutes: float, out: str | Path) -> int:
    """``parley bench soak``: run, then write soak.json, soak.png and the doc section. Exit 0 when flat."""
    from parley.bench.soak_report import write_report

    if sessions <= 0 or minutes <= 0:
        logger.error("nothing to run: sessions=%s minutes=%s", sessions, minutes)
        return 2
    result = await soak(sessions, minutes * 60.0)
    write_report(result, Path(out))
    v = result["verdict"]
    logger.info(
        "soak: %s; RSS %.1f -> %.1f MB (%+.1f %%), end fds %d/%d tasks %d/%d sessions %d",
        "FLAT" if v["flat"] else "NOT FLAT", v["rss_second_quarter_median_mb"], v["rss_last_quarter_median_mb"],
        v["rss_change_pct"], v["end"]["fds"], v["baseline"]["fds"], v["end"]["tasks"], v["baseline"]["tasks"],
        v["end"]["sessions"],
    )  # fmt: skip
    return 0 if v["flat"] else 1
