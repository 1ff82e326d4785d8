"""The relay under soak: ``parley serve``'s app and server, plus ``GET /bench/soak-stats`` reporting what a
leak would grow (RSS, open fds, asyncio tasks, live sessions) from inside the process.

Run as ``python -m parley.bench.soak_relay --port P`` (settings from the environment, as ``parley serve``). The
stats route is the only addition; everything else is the relay as it ships (``create_relay_app``,
``relay_server``: the same uvicorn settings and drain on SIGTERM). No knowledge base: the soak measures the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)

STATS_PATH = "/bench/soak-stats"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_stats() -> dict[str, int]:
    """RSS (kB) and open file descriptors of this process, from /proc."""
    try:
        rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        return {"rss_kb": -1, "fds": -1}
    return {"rss_kb": rss_pages * _PAGE // 1024, "fds": fds}


def with_stats_route(app: Any) -> Any:
    """Add the stats route in front of the others (the demo page is mounted at ``/`` and would shadow it)."""
    state = app.state.relay

    async def stats(request: Request) -> JSONResponse:
        tasks = len(asyncio.all_tasks())
        return JSONResponse({**process_stats(), "tasks": tasks, "sessions": len(state.sessions)})

    app.router.routes.insert(0, Route(STATS_PATH, stats, methods=["GET"]))
    return app


async def serve(host: str, port: int) -> None:
    from parley.relay.app import create_relay_app, relay_server
    from parley.relay.context import NoContext
    from parley.settings import Settings

    settings = Settings()
    app = with_stats_route(create_relay_app(settings, context=NoContext()))
    logger.info("soak relay listening on %s:%d", host, port)
    await relay_server(app, host, port).serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the relay with a stats route (parley bench soak only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from parley.logs import setup_logging
    from parley.settings import Settings

    setup_logging(Settings())
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
