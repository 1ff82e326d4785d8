"""The demo login: ``POST /v1/demo/ticket`` gives any caller a single-use ticket for one fixed demo user.

Mounted only when ``settings.demo_user`` is set (``parley up`` sets it to ``demo``); never in ``parley serve``
unless an operator asks for it. Everything else still holds: Origin, draining, and the demo user's per-user limits
at WebSocket admission (all demo visitors share them). The demo user may use the local provider only, so an
anonymous page can never spend the operator's cloud key.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from parley.errors import AuthError, LimitExceeded
from parley.relay.auth import Principal, check_origin
from parley.relay.gate import ShuttingDown, denial
from parley.relay.state import RelayState

logger = logging.getLogger(__name__)

DEMO_PROVIDERS = frozenset({"local"})


def demo_principal(user_id: str) -> Principal:
    return Principal(user_id, MappingProxyType({"sub": user_id, "parley_demo": True}), DEMO_PROVIDERS)


async def demo_ticket_endpoint(request: Request) -> Response:
    """A ticket for ``settings.demo_user``, no credentials: ``{"ticket", "expires_in", "user", "providers"}``."""
    state: RelayState = request.app.state.relay
    try:
        if state.draining:
            raise ShuttingDown("the relay is shutting down")
        check_origin(state.settings, request.headers.get("origin"), request.headers.get("host"))
        principal = demo_principal(state.settings.demo_user)
        ticket, ttl_s = await state.limiter.issue_ticket(principal)
    except Exception as err:
        if isinstance(err, LimitExceeded):
            state.metrics.limit_rejections.labels(err.code).inc()
        elif isinstance(err, AuthError):
            state.metrics.auth_rejections.labels(err.code).inc()
        return denial(err)
    logger.info("issued a demo ticket")
    body = {
        "ticket": ticket,
        "expires_in": ttl_s,
        "user": principal.user_id,
        "providers": sorted(DEMO_PROVIDERS),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
