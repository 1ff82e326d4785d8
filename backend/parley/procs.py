"""Child processes that Parley owns: started, awaited until their HTTP endpoint answers, stopped and reaped.

Used by ``parley up`` (llama.cpp server, local voice server) and by test fixtures. A child's output goes to a
log file, never to a pipe nobody reads, and the last lines of that log are quoted when the child fails to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ChildFailed(RuntimeError):
    pass


class ChildProcess:
    """``async with ChildProcess(...) as child:`` starts the command and returns once ``ready_url`` answers 200."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready_url: str,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready_url = ready_url
        self.env = dict(env) if env is not None else None
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"parley-{name}-", suffix=".log")
            os.close(fd)
            log_path = tmp
        self.log_path = Path(log_path)
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        logger.info("starting %s (log: %s)", self.name, self.log_path)
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self._proc.returncode is not None:
                    raise ChildFailed(
                        f"{self.name} exited with code {self._proc.returncode} before it was ready; "
                        f"last output:\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    resp = await client.get(self.ready_url)
                    if resp.status_code == 200:
                        logger.info("%s is ready at %s", self.name, self.ready_url)
                        return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ChildFailed(
                        f"{self.name} was not ready at {self.ready_url} within {self.ready_timeout_s:.0f} s; "
                        f"last output:\n{self.tail()}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), 0.2)

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        logger.info("stopping %s (pid %s)", self.name, proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout_s)
        except TimeoutError:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def __aenter__(self) -> ChildProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())
