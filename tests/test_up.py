"""``parley up`` as a user runs it: it comes up ready, SIGTERM stops the relay and every child it started, and a
failed start ends with one readable line and a non-zero exit code, not a traceback."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from parley.procs import ChildProcess, free_port


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


def _up_process(tmp_path: Path, port: int, **env: str) -> ChildProcess:
    """``parley up`` on ``port``, counted as started once its /readyz answers 200."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PARLEY_LOG_JSON": "false", **env}
    argv = [sys.executable, "-m", "parley.cli", "up", "--host", "127.0.0.1", "--port", str(port)]
    return ChildProcess(
        "parley-up", argv, env=env, ready_url=f"http://127.0.0.1:{port}/readyz", log_path=tmp_path / "up.log"
    )


@pytest.mark.models
async def test_up_serves_then_stops_its_children_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    # `make demo PORT=...` exports PORT and HOST; llama.cpp's server reads them, so they must not reach it.
    up = _up_process(tmp_path, port, PORT=str(port), HOST="127.0.0.1")
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


def _run_up(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "PARLEY_LOG_JSON": "false"}
    argv = [sys.executable, "-m", "parley.cli", "up", "--host", "127.0.0.1", *args]
    return subprocess.run(argv, env={**base, **(env or {})}, capture_output=True, text=True, timeout=120)


def _assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("parley up: ") and all(e in last for e in expected), result.stderr


def test_up_with_the_port_taken_fails_in_one_line_before_starting_children() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_up("--port", str(port))
    _assert_one_line_failure(result, f"127.0.0.1:{port}", "in use")
    assert result.stderr.strip().count("\n") == 0, result.stderr  # no child was started, nothing else to say


def test_up_with_a_child_that_exits_early_fails_in_one_line(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama.cpp's server is not installed")
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    result = _run_up("--port", str(free_port()), env={"PARLEY_LLAMA_MODEL_PATH": str(bogus)})
    _assert_one_line_failure(result, "llama-server exited with code")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _child_running(up_pid: int, marker: str) -> tuple[int, int] | None:
    """The (pid, --port) of ``parley up``'s live child whose command line holds ``marker``."""
    for pid in _children(up_pid):
        argv = _cmdline(pid)
        if marker in argv and _alive(pid):
            return pid, int(argv[argv.index("--port") + 1])
    return None


async def _until(condition: Callable[[], Awaitable[bool] | bool], within_s: float = 120) -> None:
    async with asyncio.timeout(within_s):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.1)


async def _kill_and_await_restart(
    up: ChildProcess, name: str, marker: str, ready: Callable[[], Awaitable[bool]]
) -> None:
    """SIGKILL ``parley up``'s child ``name``; await the log line, its successor on the same port, and ``ready``."""
    assert up.pid is not None
    up_pid = up.pid
    before = _child_running(up_pid, marker)
    assert before is not None, f"no {name} child"
    os.kill(before[0], signal.SIGKILL)
    await _until(lambda: f"{name} (pid {before[0]}) killed by SIGKILL" in up.tail(1000))

    def replaced() -> bool:
        now = _child_running(up_pid, marker)
        return now is not None and now[0] != before[0]

    await _until(replaced)
    after = _child_running(up_pid, marker)
    assert after is not None and after[1] == before[1], (before, after)  # the same port
    await _until(lambda: f"{name} is back at" in up.tail(1000))
    await _until(ready)


@pytest.mark.models
async def test_up_restarts_a_killed_child_on_the_same_port_and_is_ready_again(tmp_path: Path) -> None:
    port = free_port()
    up = _up_process(
        tmp_path,
        port,
        PARLEY_LLAMA_MODEL_PATH="smollm2-135m",  # the small one: this test starts it twice
        PARLEY_LLM_MODEL="smollm2",
        PARLEY_SUPERVISE_BACKOFF_BASE_S="0.1",
    )

    async def ready_with_llm() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
        return response.status_code == 200 and response.json()["checks"].get("llm") == "ok"

    async with up:
        assert up.pid is not None
        up_pid = up.pid
        assert await ready_with_llm()
        await _kill_and_await_restart(up, "llama-server", "llama_cpp.server", ready_with_llm)
        await _kill_and_await_restart(up, "local-voice-server", "local-server", ready_with_llm)
        kids = _children(up_pid)
        os.kill(up_pid, signal.SIGTERM)
        await _until(lambda: not _alive(up_pid) and not any(_alive(k) for k in kids), within_s=30)
    log = up.tail(400)
    stopped = log.index("stopping the local voice server and the LLM server")
    assert "killed by" not in log[stopped:] and "restarting" not in log[stopped:], log[stopped:]
