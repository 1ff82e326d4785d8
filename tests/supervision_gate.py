"""A stand-in for ``asyncio.sleep`` in ``supervise.Supervisor``: the restart waits until the test opens the gate,
so a test can look at the dead child's state as long as it needs, without timing anything."""

from __future__ import annotations

import asyncio


class Gate:
    """A ``sleep`` for the supervisor that returns when the test opens the gate; records the delays asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.asked = asyncio.Event()
        self._open = asyncio.Event()

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.asked.set()
        await self._open.wait()

    def open(self) -> None:
        self._open.set()
