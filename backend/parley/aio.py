"""Running Parley's event loops: uvloop when it is installed (it comes with ``uvicorn[standard]``), else asyncio.

SIGTERM cancels the main task, so ``async with`` blocks unwind and child processes are stopped (a plain SIGTERM
would end the process on the spot). Servers that handle signals themselves (uvicorn) take them over while they run.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def _cancel_on_sigterm(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; raises ``asyncio.CancelledError`` when SIGTERM stopped it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on Linux
        return asyncio.run(_cancel_on_sigterm(main))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_cancel_on_sigterm(main))
