"""The WebSocket endpoint (``/ws/voice`` and ``/v1/realtime``) and the ticket endpoint. They only admit and pump:
admission is in ``gate``, the session logic in ``session``, the pumps in ``runtime``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketState

from parley.errors import AuthError, LimitExceeded, UpstreamUnavailable
from parley.logs import log_context
from parley.relay.auth import Principal, check_origin
from parley.relay.gate import Admission, ShuttingDown, admit, authenticate, denial, withdraw
from parley.relay.limits.audio_rate import AudioRateLimiter
from parley.relay.runtime import SessionRuntime
from parley.relay.slots import Slot, slot_book
from parley.relay.state import RelayState
from parley.relay.upstream import ProviderConfig, Upstream, provider_config

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
        opened = await _open(state, ws)
    except Exception as err:
        _count_refusal(state, err)
        logger.info(
            "refused a session before accept: %s",
            getattr(err, "code", type(err).__name__),
            extra={"refusal": True},  # rationed by parley.logs.RefusalRateLimit
        )
        await _deny(ws, err)
        return
    admission = opened.admission
    with log_context(session_id=admission.session_id, user_id=admission.principal.user_id):
        await _serve(state, ws, opened)


@dataclass(frozen=True)
class _Opened:
    admission: Admission
    slot: Slot
    provider: ProviderConfig
    upstream: Upstream


def _over(ws: WebSocket) -> bool:
    """The client's session is over: it closed, or the relay sent its close."""
    gone = WebSocketState.DISCONNECTED
    return ws.client_state is gone or ws.application_state is gone


async def _open(state: RelayState, ws: WebSocket) -> _Opened:
    """Admit the request and connect its upstream, both before accept, so a client that cannot be served gets an
    HTTP denial (503 when the upstream is unreachable) and what it spent is given back (``gate.withdraw``)."""
    admission = await admit(state, ws)
    slot = slot_book(ws.app.state).hold(admission.principal.user_id, admission.session_id, lambda: _over(ws))
    provider = provider_config(state.settings, admission.provider)
    opened = _Opened(admission, slot, provider, state.upstream_factory(provider))
    with log_context(session_id=admission.session_id, user_id=admission.principal.user_id):
        try:
            await opened.upstream.connect()
        except BaseException as err:
            if isinstance(err, UpstreamUnavailable):
                logger.warning("upstream %s unavailable: %s", admission.provider, err.message)
                state.metrics.upstream_failures.labels(admission.provider).inc()
                state.metrics.errors_total.labels(err.code).inc()
            await _withdraw(ws, state, opened)
            raise
    return opened


async def _serve(state: RelayState, ws: WebSocket, opened: _Opened) -> None:
    admission, upstream = opened.admission, opened.upstream
    try:
        await ws.accept(subprotocol=admission.subprotocol)
    except (OSError, RuntimeError):  # the client left while the upstream was being connected
        logger.info("client left before the session was accepted")
        await _withdraw(ws, state, opened)
        await _close_upstream(upstream)
        return
    runtime = SessionRuntime(
        state,
        ws,
        admission,
        opened.provider,
        upstream,
        audio_rate=AudioRateLimiter.from_settings(state.settings),
    )
    state.sessions.add(runtime)
    metrics = state.metrics
    metrics.sessions_total.labels(admission.provider).inc()
    gauge = metrics.sessions_active.labels(admission.provider)
    gauge.inc()
    logger.info("session started (provider %s)", admission.provider)
    try:
        await runtime.run()
    finally:
        gauge.dec()
        state.sessions.discard(runtime)
        await _release(
            ws, state, opened
        )  # the client's session is over: free its slot before upstream teardown
        await _close_upstream(upstream)
        logger.info("session ended: %s", runtime.close_reason or "cancelled")


async def _release(ws: WebSocket, state: RelayState, opened: _Opened) -> None:
    try:
        await state.limiter.release_session(opened.admission.principal.user_id, opened.admission.session_id)
    except Exception as exc:
        logger.warning("could not release the session lease (%s); it will expire", type(exc).__name__)
    finally:
        slot_book(ws.app.state).released(opened.slot)


async def _withdraw(ws: WebSocket, state: RelayState, opened: _Opened) -> None:
    """The session never started: its slot, start and ticket go back."""
    try:
        await withdraw(state, opened.admission)
    finally:
        slot_book(ws.app.state).released(opened.slot)


async def _close_upstream(upstream: Upstream) -> None:
    try:
        await upstream.close()
    except Exception as exc:
        logger.debug("upstream close failed: %s", type(exc).__name__)


async def _deny(ws: WebSocket, err: BaseException) -> None:
    try:
        await ws.send_denial_response(denial(err))
    except RuntimeError:  # a server without the denial-response extension: close before accept (HTTP 403)
        await ws.close(1008)


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
    return await authenticate(state, request)


async def ticket_endpoint(request: Request) -> Response:
    """``POST /v1/voice/ticket`` with a Bearer JWT: a single-use ticket for the browser's WebSocket."""
    return await ticket_response(request, _jwt_principal)
