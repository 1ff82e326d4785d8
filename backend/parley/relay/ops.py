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
from parley.relay.upstream import health_url, local_upstream_urls

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


async def _check_local(state: RelayState) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The checks of the local voice server, and for a pool (several ``PARLEY_LOCAL_REALTIME_URL``) each member's by
    URL. A pool's checks are those of its first member that answers in full (the relay serves local sessions while
    one does), else those of its first member."""
    urls = local_upstream_urls(state.settings)
    if not urls:
        return {}, {}
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_S) as client:
        members = await asyncio.gather(*(_check_one_local(client, url) for url in urls))
    answering = [m for m in members if all(v == "ok" for v in m.values())]
    return (answering or members)[0], (dict(zip(urls, members, strict=True)) if len(urls) > 1 else {})


async def _check_one_local(client: httpx.AsyncClient, realtime_url: str) -> dict[str, str]:
    """``local_voice_server``: its ``/healthz`` answers 200; ``llm``: its LLM server's state, as the local voice
    server reports it in that answer (``checks.llm``; absent when the server does not report one)."""
    url = health_url(realtime_url)
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return {"local_voice_server": f"unreachable ({type(exc).__name__}) at {url}"}
    if response.status_code != 200:
        return {"local_voice_server": f"HTTP {response.status_code} from {url}"}
    llm = _reported(response, "llm")
    return {"local_voice_server": "ok"} | ({"llm": llm} if llm is not None else {})


def _reported(response: httpx.Response, name: str) -> str | None:
    """The state of dependency ``name`` in a ``{"checks": {name: state}}`` JSON body, if there is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    checks = body.get("checks") if isinstance(body, dict) else None
    value = checks.get(name) if isinstance(checks, dict) else None
    return value[:200] if isinstance(value, str) else None


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
    """200 when the limiter backend, the knowledge store, the local voice server and its LLM server all answer;
    else 503. The body names each check and its state (and each member of a pool of local voice servers)."""
    state = _state(request)
    limiter, context, (local, members) = await asyncio.gather(
        _check_limiter(state), _check_context(state), _check_local(state)
    )
    results = {"limiter": limiter, "context": context, **local}
    if state.draining:
        results["relay"] = "shutting down"
    ready = all(v == "ok" for v in results.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": results}
    if members:
        body["local_voice_servers"] = members
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
