"""An ordered, bounded sender that skips the task hop when it can.

Relaying a frame through a queue to a writer task costs an extra event-loop turn per frame. ``Outbox.put`` sends
inline when nothing is queued and no send is in progress; otherwise it queues (bounded: the producer waits when
full, which pushes back on whoever sends too fast) and ``pump`` sends the queued items in order. One lock orders
inline and pumped sends, so frames leave in the order they were put.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    def __init__(self, send: Callable[[T], Awaitable[None]], maxsize: int) -> None:
        self._send = send
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._lock = asyncio.Lock()

    def full(self) -> bool:
        return self._queue.full()

    def clear(self) -> int:
        """Drop what is queued (not what is being sent); returns how many items were dropped."""
        n = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            n += 1
        return n

    async def put(self, item: T) -> None:
        if self._queue.empty() and not self._lock.locked():
            async with self._lock:
                await self._send(item)
            return
        await self._queue.put(item)

    async def pump(self) -> NoReturn:
        while True:
            item = await self._queue.get()
            async with self._lock:
                await self._send(item)
