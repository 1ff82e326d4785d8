"""``parley serve --workers N``: N relay processes on one port, each with its own event loop.

The parent binds N listening sockets to the same address with ``SO_REUSEPORT`` (the kernel spreads new connections
over them), starts one ``parley serve --fd FD --ready-fd R`` child per socket and watches them. A child writes one
byte on the pipe ``R`` once it accepts connections; the parent says it is listening only when every child has, and
a child that dies before that ends the command, as a failed start. A child that dies later is started again on the
same socket after a back-off (connections that arrive meanwhile wait in that socket's backlog). SIGTERM / SIGINT
cancel the parent (``parley.aio``), which passes SIGTERM to every child: each drains as a lone ``parley serve``
does, and is killed if it is not done within its shutdown grace and ``STOP_MARGIN_S``.

Per-user caps must hold across the processes, so workers need the Redis limiter: ``workers_refusal`` says why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time

from parley.procs import describe_exit
from parley.restart_policy import RestartPolicy
from parley.settings import Settings

logger = logging.getLogger(__name__)

BACKLOG = 2048
READY_TIMEOUT_S = 120.0  # a child imports the relay and loads its knowledge base's embedder before it serves
STOP_MARGIN_S = 10.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0
STEADY_S = 60.0  # a restart counts towards the back-off this long


class WorkersFailed(RuntimeError):
    """A worker failed to start: one line for the user."""


def workers_refusal(settings: Settings, workers: int) -> str | None:
    """Why ``--workers`` cannot be used with these settings, or None."""
    if workers > 1 and not settings.redis_url:
        return (
            f"--workers {workers} needs the Redis limiter, shared by the worker processes (set PARLEY_REDIS_URL); "
            "the in-memory limiter would give each process its own per-user caps"
        )
    return None


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on one address with SO_REUSEPORT (``port`` 0: a free port, the same for all)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
            addr = sock.getsockname()  # port 0 resolved: the next ones join this port
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Worker:
    """One child ``parley serve`` on its own listening socket."""

    def __init__(self, index: int, sock: socket.socket, host: str, port: int) -> None:
        self.index = index
        self.sock = sock
        self.argv = [sys.executable, "-m", "parley.cli", "serve", "--host", host, "--port", str(port)]
        self.argv += ["--fd", str(sock.fileno())]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the child; returns once it accepts connections. Raises WorkersFailed if it dies first."""
        read_end, write_end = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                "--ready-fd",
                str(write_end),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(self.sock.fileno(), write_end),
            )
        finally:
            os.close(write_end)  # the child holds the only write end: its exit is EOF here
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                ready = await asyncio.to_thread(os.read, read_end, 1)
        except TimeoutError:
            ready = b""
        finally:
            os.close(read_end)
        if not ready:
            await self.stop(1.0)
            code = self.proc.returncode
            how = describe_exit(code) if code is not None else f"did not serve within {READY_TIMEOUT_S:.0f} s"
            raise WorkersFailed(f"relay worker {self.index} {how} before it was ready")
        logger.info("relay worker %d ready (pid %d)", self.index, self.proc.pid)

    async def stop(self, grace_s: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            logger.warning(
                "relay worker %d (pid %d) did not stop in %.0f s; killed", self.index, proc.pid, grace_s
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _watch(worker: Worker) -> None:
    """Restart ``worker`` whenever it dies, with ``parley up``'s back-off policy (doubling while restarts are recent,
    never giving up: the relay has no other process to fall back on); a restart that fails counts as another death."""
    policy = RestartPolicy(
        base_s=BACKOFF_MIN_S, max_s=BACKOFF_MAX_S, max_restarts=sys.maxsize, window_s=STEADY_S
    )
    while True:
        assert worker.proc is not None
        code = await worker.proc.wait()
        backoff = policy.on_exit(time.monotonic())
        assert backoff is not None  # max_restarts is unbounded
        logger.error(
            "relay worker %d (pid %d) %s; restarting it in %.0f s",
            worker.index,
            worker.proc.pid,
            describe_exit(code),
            backoff,
        )
        await asyncio.sleep(backoff)
        with contextlib.suppress(WorkersFailed):  # logged by the next turn of the loop, as a death
            await worker.start()


async def serve_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    """Run ``workers`` relay processes on ``host:port`` until cancelled (SIGTERM/SIGINT), then stop them."""
    refusal = workers_refusal(settings, workers)
    if refusal is not None:
        raise WorkersFailed(refusal)
    sockets = listening_sockets(host, port, workers)
    bound = sockets[0].getsockname()[1]
    pool = [Worker(i, sock, host, bound) for i, sock in enumerate(sockets)]
    try:
        await asyncio.gather(*(worker.start() for worker in pool))
        logger.info(
            "relay listening on %s:%d with %d worker processes (pid %d)", host, bound, workers, os.getpid()
        )
        async with asyncio.TaskGroup() as group:
            for worker in pool:
                group.create_task(_watch(worker))
    except* WorkersFailed as failed:
        raise failed.exceptions[0] from None
    finally:
        for sock in sockets:  # no new connection queues up behind a worker that is leaving
            sock.close()
        grace = settings.shutdown_grace_s + STOP_MARGIN_S
        await asyncio.gather(*(w.stop(grace) for w in pool))
