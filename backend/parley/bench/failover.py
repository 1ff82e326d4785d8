"""``parley bench failover``: how long a user is without an answer when the session's upstream dies.

Two fast scripted upstreams (``fast_upstream``, each in its own process) form the relay's local pool; the relay runs
in this process (uvicorn on loopback). Each round opens a session, checks it is answered, SIGKILLs the upstream
process serving it, and measures:

- ``gap_ms``: the relay's own figure, from the loss of the connection to the new upstream's ``session.updated``
  (the ``parley.session`` moved notice carries it);
- ``notice_ms``: from the kill to the client holding that notice (adds the kernel's reset and the relay's
  detection);
- ``answer_ms``: from the kill to the client's first answer from the new upstream (a frame sent after the notice).

The killed process is restarted on the same port before the next round, so each round has two upstreams.
Results: logged, and written to ``failover.json`` under ``out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from parley.bench.relay import mint
from parley.bench.report import summary
from parley.procs import free_port
from parley.settings import Settings

logger = logging.getLogger(__name__)

APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * 800})  # 50 ms of silence
WITHIN_S = 10.0


async def _upstream(port: int) -> asyncio.subprocess.Process:
    """A fast upstream process on ``port``, once it accepts connections."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley.bench.fast_upstream",
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if proc.returncode is not None:
                    raise RuntimeError(
                        f"the fast upstream on port {port} exited ({proc.returncode})"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return proc


async def _until(ws: ClientConnection, type_: str, **match: Any) -> dict[str, Any]:
    async with asyncio.timeout(WITHIN_S):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event.get("type") == type_ and all(event.get(k) == v for k, v in match.items()):
                return event


@contextlib.asynccontextmanager
async def _relay(settings: Settings) -> AsyncIterator[tuple[Any, int]]:
    from parley.relay.app import create_relay_app, relay_server
    from parley.relay.limits.memory import MemoryLimiter

    app = create_relay_app(settings, limiter=MemoryLimiter(settings))
    server = relay_server(app, "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield app.state.relay, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def run_failover_bench(
    settings: Settings, *, kills: int = 20, out: str | Path = "docs/benchmarks"
) -> int:
    secret = secrets.token_urlsafe(32)
    ports = [free_port(), free_port()]
    urls = ",".join(f"ws://127.0.0.1:{p}/v1/realtime" for p in ports)
    relay_settings = settings.model_copy(
        update={
            "jwt_secret": type(settings.jwt_secret)(secret),
            "local_realtime_url": urls,
            "redis_url": "",
            "max_concurrent_sessions": 100_000,
            "sessions_per_hour": 1_000_000,
            "idle_timeout_s": 300,
            "rag_enabled": False,
            "upstream_failover": True,
        }
    )
    procs = {p: await _upstream(p) for p in ports}
    rounds: list[dict[str, float]] = []
    try:
        async with _relay(relay_settings) as (state, port):
            pool = state.upstreams.pool_of("local")
            for n in range(kills):
                headers = {"Authorization": f"Bearer {mint(relay_settings, f'failover-{n}')}"}
                async with connect(
                    f"ws://127.0.0.1:{port}/ws/voice?provider=local&parley_events=true",
                    additional_headers=headers,
                ) as ws:
                    await _until(ws, "parley.session", status="active")
                    await ws.send(APPEND)
                    await _until(ws, "response.output_audio.delta")
                    (serving,) = [m.url for m in pool.members if m.load == 1]
                    victim = next(p for p in ports if f":{p}/" in serving)
                    killed_at = time.perf_counter()
                    procs[victim].send_signal(signal.SIGKILL)
                    moved = await _until(ws, "parley.session", status="moved")
                    notice_ms = (time.perf_counter() - killed_at) * 1000.0
                    await ws.send(APPEND)
                    await _until(ws, "response.output_audio.delta")
                    answer_ms = (time.perf_counter() - killed_at) * 1000.0
                rounds.append(
                    {"gap_ms": float(moved["gap_ms"]), "notice_ms": notice_ms, "answer_ms": answer_ms}
                )
                logger.info(
                    "round %d: gap %.1f ms, notice %.1f ms, answer %.1f ms", n + 1, *rounds[-1].values()
                )
                await procs[victim].wait()
                procs[victim] = await _upstream(victim)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
    result = {key: summary([r[key] for r in rounds]) for key in ("gap_ms", "notice_ms", "answer_ms")}
    for key, s in result.items():
        logger.info(
            "%s over %d kills: p50 %.1f, p95 %.1f, max %.1f", key, len(rounds), s["p50"], s["p95"], s["max"]
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "failover.json").write_text(json.dumps({"summary": result, "rounds": rounds}, indent=2) + "\n")
    return 0 if len(rounds) == kills else 1
