"""Relay test fixtures: a real Redis for the whole session; the real local voice server (models tests).

``PARLEY_TEST_REDIS_URL`` points the tests at an existing Redis; otherwise a throw-away ``redis-server`` (no
persistence) is started on a free loopback port and stopped at the end. Tests use fresh user ids, so they never
need to flush it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("PARLEY_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server not found (scripts/system-deps.sh installs it) and PARLEY_TEST_REDIS_URL unset"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the real local voice server (mark: models) ------------------------------------------------------------------


@pytest.fixture(scope="session")
async def local_voice_url(
    model_settings: Any, llama_server: Any, stt_engine: Any, tts_engine: Any, vad_factory: Any
) -> AsyncIterator[str]:
    from relay_harness import local_voice_server

    settings = model_settings.model_copy(update={"llm_base_url": llama_server.base_url})
    async with local_voice_server(settings, stt_engine, tts_engine, vad_factory) as url:
        yield url
