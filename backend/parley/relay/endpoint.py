"""The WebSocket endpoint (``/ws/voice`` and ``/v1/realtime``) and the ticket endpoint. They only admit and pump:
admission is in ``gate``, the session logic in ``session``, the pumps in ``runtime``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from parley.errors import AuthError, LimitExceeded, UpstreamUnavailable, error_event
from parley.logs import log_context
from parley.relay import wire
from parley.relay.auth import Principal, check_origin
from parley.relay.gate import Admission, ShuttingDown, admit, authenticate, denial
from parley.relay.limits.audio_rate import AudioRateLimiter
from parley.relay.runtime import SessionRuntime
from parley.relay.state import RelayState
from parley.relay.upstream import provider_config

logger = logging.getLogger(__name__)


def _count_refusal(state: RelayState, err: BaseException) -> None:
    m = state.metrics
    if isinstance(err, LimitExceeded):
        m.limit_rejections.labels(err.code).inc()
    elif isinstance(err, AuthError):
        m.auth_rejections.labels(err.code).inc()


async def voice_endpoint(ws: WebSocket) -> None:
    state: RelayState = ws.app.state.relay
    try:
        admission = await admit(state, ws)
    except Exception as err:
        _count_refusal(state, err)
        logger.info("refused a session before accept: %s", getattr(err, "code", type(err).__name__))
        await _deny(ws, err)
        return
    with log_context(session_id=admission.session_id, user_id=admission.principal.user_id):
        try:
            await _serve(state, ws, admission)
        finally:
            try:
                await state.limiter.release_session(admission.principal.user_id, admission.session_id)
            except Exception as exc:
                logger.warning("could not release the session lease (%s); it will expire", type(exc).__name__)


async def _deny(ws: WebSocket, err: BaseException) -> None:
    try:
        await ws.send_denial_response(denial(err))
    except RuntimeError:  # a server without the denial-response extension: close before accept (HTTP 403)
        await ws.close(1008)


async def _serve(state: RelayState, ws: WebSocket, admission: Admission) -> None:
    await ws.accept(subprotocol=admission.subprotocol)
    provider = provider_config(state.settings, admission.provider)
    upstream = state.upstream_factory(provider)
    metrics = state.metrics
    try:
        await upstream.connect()
    except UpstreamUnavailable as err:
        logger.warning("upstream %s unavailable: %s", admission.provider, err.message)
        metrics.upstream_failures.labels(admission.provider).inc()
        metrics.errors_total.labels(err.code).inc()
        try:
            await ws.send_text(wire.dumps(error_event(err)))
            await ws.close(1013, "upstream_unavailable")
        except (RuntimeError, OSError):
            pass
        return
    runtime = SessionRuntime(
        state, ws, admission, provider, upstream, audio_rate=AudioRateLimiter.from_settings(state.settings)
    )
    state.sessions.add(runtime)
    metrics.sessions_total.labels(admission.provider).inc()
    gauge = metrics.sessions_active.labels(admission.provider)
    gauge.inc()
    logger.info("session started (provider %s)", admission.provider)
    try:
        await runtime.run()
    finally:
        gauge.dec()
        state.sessions.discard(runtime)
        try:
            await upstream.close()
        except Exception as exc:
            logger.debug("upstream close failed: %s", type(exc).__name__)
        logger.info("session ended: %s", runtime.close_reason or "cancelled")


async def ticket_response(
    request: Request,
    principal_of: Callable[[RelayState, Request], Awaitable[Principal]],
    describe: Callable[[Principal], dict[str, Any]] | None = None,
) -> Response:
    """Issue a single-use browser ticket for whoever ``principal_of`` says the caller is: refused while draining,
    for a bad Origin, or by ``principal_of`` / the limiter (counted, as an HTTP denial)."""
    state: RelayState = request.app.state.relay
    try:
        if state.draining:
            raise ShuttingDown("the relay is shutting down")
        check_origin(state.settings, request.headers.get("origin"), request.headers.get("host"))
        principal = await principal_of(state, request)
        ticket, ttl_s = await state.limiter.issue_ticket(principal)
    except Exception as err:
        _count_refusal(state, err)
        return denial(err)
    body = {"ticket": ticket, "expires_in": ttl_s, **(describe(principal) if describe else {})}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _jwt_principal(state: RelayState, request: Request) -> Principal:
    return await authenticate(state, request, allow_ticket=False)


async def ticket_endpoint(request: Request) -> Response:
    """``POST /v1/voice/ticket`` with a Bearer JWT: a single-use ticket for the browser's WebSocket."""
    return await ticket_response(request, _jwt_principal)
