"""Outbox: inline sends when idle, queued sends in order otherwise, back-pressure when full."""

from __future__ import annotations

import asyncio
import contextlib

from parley.relay.outbox import Outbox


async def test_inline_when_idle_and_ordered_under_contention() -> None:
    sent: list[int] = []
    gate = asyncio.Event()
    six = asyncio.Event()

    async def send(item: int) -> None:
        if item == 0:
            await gate.wait()  # the first send stalls, so later puts must queue behind it
        sent.append(item)
        if len(sent) == 6:
            six.set()

    box: Outbox[int] = Outbox(send, maxsize=8)
    async with asyncio.TaskGroup() as tg:
        pump = tg.create_task(box.pump())
        first = tg.create_task(box.put(0))
        await asyncio.sleep(0)
        for i in range(1, 6):
            await box.put(i)
        assert sent == []
        gate.set()
        await first
        await six.wait()
        await asyncio.sleep(0)  # let the pump release the lock
        await box.put(6)  # idle again: sent inline, before put returns
        assert sent == [0, 1, 2, 3, 4, 5, 6]
        pump.cancel()


async def test_full_outbox_makes_the_producer_wait() -> None:
    release = asyncio.Event()

    async def send(item: int) -> None:
        await release.wait()

    box: Outbox[int] = Outbox(send, maxsize=2)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(box.put(0))  # inline, blocked in send
        await asyncio.sleep(0)
        await box.put(1)
        await box.put(2)
        assert box.full()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await box.put(3)
            raise AssertionError("put on a full outbox returned")
        release.set()
