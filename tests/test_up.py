"""``parley up`` as a user runs it: it comes up ready, and SIGTERM stops the relay and every child it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from parley.procs import ChildProcess, free_port

pytestmark = pytest.mark.models


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_up_serves_then_stops_its_children_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PARLEY_LOG_JSON": "false"}
    argv = [sys.executable, "-m", "parley.cli", "up", "--host", "127.0.0.1", "--port", str(port)]
    up = ChildProcess(
        "parley-up", argv, env=env, ready_url=f"http://127.0.0.1:{port}/readyz", log_path=tmp_path / "up.log"
    )
    async with up:
        assert up.pid is not None
        kids = _children(up.pid)
        assert len(kids) == 2, f"expected the LLM server and the local voice server, got {kids}"
        async with httpx.AsyncClient() as client:
            page = await client.get(f"http://127.0.0.1:{port}/")
            assert page.status_code == 200 and "Parley" in page.text
        os.kill(up.pid, signal.SIGTERM)  # the process alone, as a service manager would
        async with asyncio.timeout(30):
            while _alive(up.pid) or any(_alive(k) for k in kids):  # noqa: ASYNC110 - OS processes, no event
                await asyncio.sleep(0.2)
    log = up.tail(40)
    assert "stopping the local voice server and the LLM server" in log, log
