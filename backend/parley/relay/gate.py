"""Admission: everything the relay checks before it accepts a WebSocket, and how a refusal looks on the wire.

Order matters: draining, Origin, credentials (Bearer JWT or single-use ticket), provider, provider claim, then the
limiter. Nothing here opens an upstream; a refused client never costs one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.responses import Response

from parley.errors import AuthError, DependencyError, InvalidRequest, LimitExceeded, ParleyError
from parley.realtime.ids import new_id
from parley.relay.auth import Principal, bearer_token, check_origin, check_provider, kb_for
from parley.relay.upstream import provider_for

if TYPE_CHECKING:
    from parley.relay.limits.base import SessionGrant
    from parley.relay.state import RelayState

logger = logging.getLogger(__name__)

TICKET_PREFIX = "parley-ticket."
REALTIME_SUBPROTOCOL = "realtime"


class ShuttingDown(DependencyError):
    code = "server_shutting_down"


@dataclass(frozen=True)
class Admission:
    principal: Principal
    provider: str
    session_id: str
    grant: SessionGrant
    subprotocol: str | None
    kb: str = "default"


def _ticket(subprotocols: list[str]) -> str | None:
    for proto in subprotocols:
        if proto.startswith(TICKET_PREFIX):
            return proto[len(TICKET_PREFIX) :]
    return None


async def authenticate(state: RelayState, conn: HTTPConnection, *, allow_ticket: bool) -> Principal:
    """The caller's principal from ``Authorization: Bearer`` or (WebSocket only) a ticket subprotocol."""
    token = bearer_token(conn.headers.get("authorization"))
    if token is not None:
        verifier = state.verifier
        if verifier.uses_network:
            return await asyncio.to_thread(verifier.verify, token)
        return verifier.verify(token)
    if allow_ticket:
        ticket = _ticket(list(conn.scope.get("subprotocols") or []))
        if ticket is not None:
            principal = await state.limiter.redeem_ticket(ticket)
            if principal is None:
                raise AuthError("ticket unknown, expired or already used", code="invalid_ticket")
            return principal
    raise AuthError("missing credentials: send Authorization: Bearer <JWT> or a parley-ticket subprotocol")


async def admit(state: RelayState, conn: HTTPConnection) -> Admission:
    """Check a WebSocket request before accept. Raises a ParleyError that ``denial`` turns into a response."""
    if state.draining:
        raise ShuttingDown("the relay is shutting down; reconnect shortly")
    check_origin(state.settings, conn.headers.get("origin"), conn.headers.get("host"))
    principal = await authenticate(state, conn, allow_ticket=True)
    provider = provider_for(
        state.settings, provider=conn.query_params.get("provider"), model=conn.query_params.get("model")
    )
    check_provider(principal, provider)
    kb = kb_for(state.settings, principal, conn.query_params.get("kb"))
    session_id = new_id("session")
    grant = await state.limiter.acquire_session(principal.user_id, session_id)
    offered = list(conn.scope.get("subprotocols") or [])
    subprotocol = REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None
    return Admission(principal, provider, session_id, grant, subprotocol, kb)


def denial(err: BaseException) -> Response:
    """The HTTP response for a refused request: status, JSON body, Retry-After where a retry can work."""
    headers: dict[str, str] = {}
    if isinstance(err, AuthError):
        status = err.status
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="parley"'
    elif isinstance(err, LimitExceeded):
        status = 429
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s)))
    elif isinstance(err, DependencyError):  # incl. ShuttingDown
        status = 503
        headers["Retry-After"] = "5"
    elif isinstance(err, InvalidRequest):
        status = 400
    else:
        status = 500
    if isinstance(err, ParleyError):
        body = {"type": err.type, "code": err.code, "message": err.message}
        if isinstance(err, LimitExceeded):
            body["retry_after_s"] = max(1, math.ceil(err.retry_after_s))  # type: ignore[assignment]
    else:
        logger.error("unexpected error during admission", exc_info=err)
        body = {"type": "server_error", "code": "internal_error", "message": "internal error"}
    return Response(
        json.dumps({"error": body}), status_code=status, headers=headers, media_type="application/json"
    )
