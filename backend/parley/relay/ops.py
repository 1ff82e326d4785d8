"""Operations: health, readiness, metrics, and the graceful drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from parley.relay.metrics import CONTENT_TYPE_LATEST
from parley.relay.state import RelayState
from parley.relay.upstream import health_url

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0


def _state(request: Request) -> RelayState:
    state: RelayState = request.app.state.relay
    return state


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _check_limiter(state: RelayState) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await state.limiter.ping()
        return "ok"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


async def _check_local(state: RelayState) -> str:
    url = health_url(state.settings.local_realtime_url)
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
            response = await client.get(url)
        return "ok" if response.status_code == 200 else f"HTTP {response.status_code} from {url}"
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__}) at {url}"


async def _check_context(state: RelayState) -> str:
    ready = getattr(state.context, "ready", None)
    if ready is None:
        return "ok"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return "ok" if await ready() else "loading"
    except Exception as exc:
        return f"failed ({type(exc).__name__})"


async def readyz(request: Request) -> Response:
    """200 when the limiter backend, the local voice server and the knowledge store all answer; else 503."""
    state = _state(request)
    names = ["limiter", "context"]
    checks = [_check_limiter(state), _check_context(state)]
    if state.settings.local_realtime_url:
        names.append("local_voice_server")
        checks.append(_check_local(state))
    results = dict(zip(names, await asyncio.gather(*checks), strict=True))
    if state.draining:
        results["relay"] = "shutting down"
    ready = all(v == "ok" for v in results.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": results}
    if not ready:
        body["not_ready"] = sorted(k for k, v in results.items() if v != "ok")
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def drain(state: RelayState, grace_s: float) -> None:
    """Stop admitting sessions (new ones get a 503 denial), tell every connected client (``parley.session``
    closing / server_shutdown), let answers in flight finish within ``grace_s``, then close them with 1001."""
    state.draining = True
    runtimes = list(state.sessions)
    if not runtimes:
        return
    logger.info("draining %d session(s), grace %.1f s", len(runtimes), grace_s)
    for runtime in runtimes:
        runtime.request_drain(grace_s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_s + 2.0):
            for runtime in runtimes:
                await runtime.finished.wait()
    left = sum(1 for r in runtimes if not r.finished.is_set())
    if left:
        logger.warning("%d session(s) still open after the drain grace period", left)
