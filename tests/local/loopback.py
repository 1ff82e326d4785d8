"""A uvicorn server on a loopback port for the duration of a block (tests only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def uvicorn_on_loopback(config: Any) -> AsyncIterator[int]:
    """Serve ``config`` (a ``uvicorn.Config`` with port 0) and yield the port it got."""
    import uvicorn

    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:  # noqa: ASYNC110 - uvicorn only exposes a flag
                await asyncio.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        async with asyncio.timeout(20):
            await task
