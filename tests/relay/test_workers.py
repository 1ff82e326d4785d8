"""``parley serve --workers 2``: two real relay processes on one port serve sessions and share the Redis limiter's
per-user caps; without Redis the option is refused in one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import AUDIENCE, ISSUER, SECRET, recv_until, token
from websockets.asyncio.client import ClientConnection, connect

LISTENING = re.compile(rb"relay listening on 127\.0\.0\.1:(\d+) with 2 worker processes")
START_S = 60.0  # two Python processes importing the relay on a loaded 2-core machine


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_JWT_SECRET=SECRET,
        PARLEY_JWT_AUDIENCE=AUDIENCE,
        PARLEY_JWT_ISSUER=ISSUER,
        PARLEY_RAG_ENABLED="false",
        PARLEY_LOG_JSON="false",
        **extra,
    )
    return env


def _serve(workers: int) -> list[str]:
    argv = [sys.executable, "-m", "parley.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    return argv + ["--workers", str(workers)]


@contextlib.asynccontextmanager
async def two_workers(redis_url: str, upstream: FakeUpstream) -> AsyncIterator[tuple[int, list[int]]]:
    """``parley serve --workers 2``: yields its port and its two worker pids once both accept connections (the
    parent says it is listening only then)."""
    env = _env(
        PARLEY_REDIS_URL=redis_url,
        PARLEY_LOCAL_REALTIME_URL=upstream.url,
        PARLEY_MAX_CONCURRENT_SESSIONS="2",
        PARLEY_SESSIONS_PER_HOUR="1000",
    )
    proc = await asyncio.create_subprocess_exec(
        *_serve(2), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(START_S):
            while (match := LISTENING.search(line := await proc.stderr.readline())) is None:
                assert line, "parley serve --workers 2 ended before it listened"
        drain = asyncio.create_task(_discard(proc.stderr))  # keep reading, so the pipe never fills
        pids = _children(proc.pid)
        assert len(pids) == 2
        yield int(match.group(1)), pids
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(START_S):
            code = await proc.wait()
        if drain is not None:
            await drain
    assert code in (0, -signal.SIGTERM, 143), code
    assert not any(_alive(pid) for pid in pids)  # the workers were stopped and reaped


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _serving_pid(pids: list[int], server_port: int, client_port: int) -> int | None:
    """Which of ``pids`` holds the server side of the loopback connection from ``client_port``."""
    wanted = f"{server_port:04X}", f"{client_port:04X}"
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1].split(":")[1], fields[2].split(":")[1], fields[9]
        if (local, remote) == wanted:
            inodes[f"socket:[{inode}]"] = True
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    return None


async def _open(port: int, user: str) -> ClientConnection | int:
    url = f"ws://127.0.0.1:{port}/ws/voice?provider=local&parley_events=true"
    try:
        ws = await connect(
            url, additional_headers={"Authorization": f"Bearer {token(user)}"}, open_timeout=20
        )
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await recv_until(ws, "parley.session", within_s=20)
    return ws


@pytest.mark.redis
async def test_two_workers_serve_sessions_from_two_processes_sharing_the_per_user_caps(
    redis_url: str,
) -> None:
    async with fake_upstream() as upstream, two_workers(redis_url, upstream) as (port, pids):
        # Sessions of 24 users: the kernel spreads the connections over both processes (all on one: 2**-23).
        opened = await asyncio.gather(*(_open(port, f"w-spread-{i}") for i in range(24)))
        sessions = [ws for ws in opened if not isinstance(ws, int)]
        assert len(sessions) == 24
        serving = {_serving_pid(pids, port, ws.local_address[1]) for ws in sessions}
        assert serving == set(pids)
        for ws in sessions:
            await ws.close()
        # One user connecting 20 times at once, through both processes: exactly the 2 sessions of the cap.
        storm = await asyncio.gather(*(_open(port, "w-storm") for _ in range(20)))
        held = [ws for ws in storm if not isinstance(ws, int)]
        assert len(held) == 2
        assert sorted(s for s in storm if isinstance(s, int)) == [429] * 18
        for ws in held:
            await ws.close()


async def test_workers_without_redis_are_refused_in_one_line() -> None:
    proc = await asyncio.create_subprocess_exec(
        *_serve(2), env=_env(PARLEY_REDIS_URL=""), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(START_S):
        out, err = await proc.communicate()
    assert proc.returncode == 2
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1
    assert "--workers 2 needs the Redis limiter" in lines[0] and "PARLEY_REDIS_URL" in lines[0]


@pytest.mark.redis
async def test_a_worker_that_fails_before_it_serves_fails_the_start_in_one_line(redis_url: str) -> None:
    # A key without its certificate: each worker refuses to start; the parent must not claim to be listening.
    env = _env(PARLEY_REDIS_URL=redis_url, PARLEY_TLS_KEY_FILE="/nonexistent-key.pem")
    proc = await asyncio.create_subprocess_exec(
        *_serve(2), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(START_S):
        _, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    text = err.decode()
    assert "Traceback" not in text and not LISTENING.search(err), text
    last = text.strip().splitlines()[-1]
    assert last.startswith("parley serve: relay worker") and "before it was ready" in last, text
