"""Supervision of a real child process (a small HTTP server standing in for llama.cpp's server or the local voice
server): a SIGKILLed child is logged and restarted on the same port; a crash loop gives up with an ERROR line;
leaving supervision (``parley up`` shutting down) restarts nothing. The backoff's ``sleep`` is a gate the test
opens, so nothing here waits on time."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from parley.procs import ChildProcess, free_port
from parley.restart_policy import RestartPolicy
from parley.supervise import Supervisor
from supervision_gate import Gate

STAND_IN = """
import http.server, os, pathlib, sys
port, mode = int(sys.argv[1]), pathlib.Path(sys.argv[2])
if mode.exists() and mode.read_text() == "exit":
    print("stand-in told to exit at once", flush=True)
    sys.exit(3)
print(f"stand-in serving on port {port}, pid {os.getpid()}", flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture
def child(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> ChildProcess:
    caplog.set_level(logging.INFO, logger="parley")
    return stand_in(tmp_path, free_port())


def stand_in(tmp_path: Path, port: int) -> ChildProcess:
    argv = [sys.executable, "-c", STAND_IN, str(port), str(tmp_path / "mode")]
    return ChildProcess(
        "stand-in",
        argv,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout_s=30,
        log_path=tmp_path / "stand-in.log",
    )


def policy(base_s: float = 0.5, max_restarts: int = 5) -> RestartPolicy:
    return RestartPolicy(base_s=base_s, max_s=8 * base_s, max_restarts=max_restarts, window_s=300.0)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url)).status_code == 200
    except httpx.ConnectError:
        return False


async def test_a_killed_child_is_logged_and_restarted_on_the_same_port(
    child: ChildProcess, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    async with child, Supervisor(child, policy(), sleep=gate.sleep) as supervisor:
        first = child.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(30):
            await gate.asked.wait()
        assert supervisor.state == "restarting" and gate.delays == [0.5]
        (died,) = errors(caplog)
        assert f"stand-in (pid {first}) killed by SIGKILL" in died, died
        assert f"pid {first}" in died.splitlines()[-1], died  # the last lines of its log
        assert not await answers(child.ready_url)
        gate.open()
        async with asyncio.timeout(30):
            await supervisor.wait_until(lambda s: s.state == "running")
        assert child.pid not in (None, first) and supervisor.restarts == 1
        assert await answers(child.ready_url)  # the same URL, so the same port
    assert any("stand-in is back at" in r.getMessage() for r in caplog.records)


async def test_a_crash_loop_gives_up_with_an_error_line(
    tmp_path: Path, child: ChildProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async with child, Supervisor(child, policy(base_s=0.001, max_restarts=3)) as supervisor:
        (tmp_path / "mode").write_text("exit")  # every start from now on exits at once
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        async with asyncio.timeout(60):
            await supervisor.wait_until(lambda s: s.state == "failed")
        assert supervisor.restarts == 3 and child.returncode == 3
    lines = errors(caplog)
    assert len([line for line in lines if "failed to restart" in line]) == 3, lines
    assert "exited with code 3 before it was ready" in lines[-2]
    assert "stand-in died 4 times within 300 s: giving up" in lines[-1], lines
    assert supervisor.state == "failed"


async def test_leaving_supervision_cancels_a_pending_restart_and_restarts_nothing(
    child: ChildProcess, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    async with child:
        async with Supervisor(child, policy(), sleep=gate.sleep) as supervisor:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            async with asyncio.timeout(30):
                await gate.asked.wait()
        # supervision has ended while its restart waited: the gate is never opened, and nothing hangs
        assert supervisor.state == "stopped" and supervisor.restarts == 1
    assert not await answers(child.ready_url)
    starts = [r for r in caplog.records if r.getMessage().startswith("starting stand-in")]
    assert len(starts) == 1


async def test_a_child_stopped_after_supervision_ends_is_not_restarted(
    child: ChildProcess, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate()
    async with child, Supervisor(child, policy(), sleep=gate.sleep) as supervisor:
        pass
    # exit order: supervision first, then the child stops (SIGTERM)
    assert child.returncode is not None and supervisor.state == "stopped"
    assert gate.delays == [] and errors(caplog) == []
