"""Supervision of a running child process (``procs.ChildProcess``): when it dies, say so, and start it again.

``async with Supervisor(child, policy):`` watches a child that has already started. When the child dies, one ERROR
line names it, how it ended (exit code or signal) and the last lines of its log; it is started again, with the same
command line (so on the same port and URL), after the delay ``restart_policy.RestartPolicy`` gives. A restart that
fails counts as another death. When the policy gives up (too many restarts within its window) one ERROR line says
the child stays down, and supervision ends. Leaving the block stops watching first, so a child that is then stopped
on purpose (``parley up`` shutting down) is not restarted; stopping the child stays its owner's job.

``state`` is ``running``, ``restarting`` (dead, waiting or starting again), ``failed`` (given up) or ``stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal

from parley.procs import ChildProcess, StartFailed, describe_exit
from parley.restart_policy import RestartPolicy
from parley.settings import Settings

logger = logging.getLogger(__name__)

State = Literal["running", "restarting", "failed", "stopped"]
TAIL_LINES = 15


def restart_policy(settings: Settings) -> RestartPolicy:
    return RestartPolicy(
        base_s=settings.supervise_backoff_base_s,
        max_s=max(settings.supervise_backoff_max_s, settings.supervise_backoff_base_s),
        max_restarts=settings.supervise_max_restarts,
        window_s=settings.supervise_window_s,
    )


class Supervisor:
    def __init__(
        self,
        child: ChildProcess,
        policy: RestartPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.child = child
        self.policy = policy
        self.restarts = 0
        self.state: State = "running"
        self._clock = clock
        self._sleep = sleep
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wait_until(self, condition: Callable[[Supervisor], bool]) -> None:
        """Return once ``condition(self)`` holds (checked at each change of ``state``)."""
        while not condition(self):
            await self._changed.wait()

    def _set_state(self, state: State) -> None:
        self.state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _watch(self) -> None:
        try:
            await self._supervise()
        except Exception:  # a bug here must not pass silently: the child would be left unwatched
            logger.exception("supervision of %s failed; it is no longer restarted", self.child.name)
            self._set_state("failed")

    async def _supervise(self) -> None:
        while True:
            code = await self.child.wait()
            died_at = self._clock()
            logger.error(
                "%s (pid %s) %s; last lines of %s:\n%s",
                self.child.name,
                self.child.pid,
                describe_exit(code),
                self.child.log_path,
                self.child.tail(TAIL_LINES),
            )
            self._set_state("restarting")
            if not await self._restart():
                self._set_state("failed")
                return
            logger.info(
                "%s is back at %s (pid %s), %.1f s after it died",
                self.child.name,
                self.child.ready_url,
                self.child.pid,
                self._clock() - died_at,
            )
            self._set_state("running")

    async def _restart(self) -> bool:
        """Start the dead child again, retrying by the policy; False when the policy gives up."""
        while True:
            delay = self.policy.on_exit(self._clock())
            if delay is None:
                logger.error(
                    "%s died %d times within %.0f s: giving up, it stays down until parley up is restarted "
                    "(log: %s)",
                    self.child.name,
                    self.policy.max_restarts + 1,
                    self.policy.window_s,
                    self.child.log_path,
                )
                return False
            self.restarts += 1
            logger.warning("restarting %s in %.1f s (restart %d)", self.child.name, delay, self.restarts)
            await self._sleep(delay)
            try:
                await self.child.start()
                return True
            except (StartFailed, OSError) as exc:
                logger.error("%s failed to restart: %s", self.child.name, exc)

    async def __aenter__(self) -> Supervisor:
        if self.child.returncode is not None or self.child.pid is None:
            raise RuntimeError(f"{self.child.name} must be running before it is supervised")
        self._task = asyncio.create_task(self._watch(), name=f"supervise-{self.child.name}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # a cancellation of this task itself still propagates
        if self.state != "failed":
            self._set_state("stopped")
