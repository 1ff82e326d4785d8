"""Admission: everything the relay checks before it accepts a WebSocket, and how a refusal looks on the wire.

Order matters: draining, Origin, credentials (Bearer JWT or single-use ticket), provider, provider claim, then the
limiter. Nothing here opens an upstream; a refused client never costs one (the endpoint connects the upstream
after admission, still before accept).

A refusal costs the client nothing: a ticket redeemed by a request that is then refused is put back (it stays
usable until its own expiry), and ``withdraw`` undoes an admission whose session never started (slot, start and
ticket). While a request holds a redeemed ticket, a parallel request with the same ticket is refused (401), so a
ticket opens at most one session. A request refused for too many sessions while one of the user's sessions on
this relay is over but not yet released waits for that release and asks once more (``slots``).
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
from parley.realtime.extensions import EVENTS_QUERY, wants_parley_events
from parley.realtime.ids import new_id
from parley.relay.auth import Principal, bearer_token, check_origin, check_provider, kb_for
from parley.relay.slots import slot_book
from parley.relay.upstream import provider_for

if TYPE_CHECKING:
    from parley.relay.limits.base import RedeemedTicket, SessionGrant
    from parley.relay.slots import SlotBook
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
    ticket: RedeemedTicket | None = None  # put back by ``withdraw``
    parley_events: bool = False  # the client asked for Parley's own events (``notices``)


def _ticket(subprotocols: list[str]) -> str | None:
    for proto in subprotocols:
        if proto.startswith(TICKET_PREFIX):
            return proto[len(TICKET_PREFIX) :]
    return None


async def _bearer(state: RelayState, conn: HTTPConnection) -> Principal | None:
    token = bearer_token(conn.headers.get("authorization"))
    if token is None:
        return None
    verifier = state.verifier
    if verifier.uses_network:
        return await asyncio.to_thread(verifier.verify, token)
    return verifier.verify(token)


async def authenticate(state: RelayState, conn: HTTPConnection) -> Principal:
    """The caller's principal from ``Authorization: Bearer`` (the ticket endpoints)."""
    principal = await _bearer(state, conn)
    if principal is None:
        raise AuthError("missing credentials: send Authorization: Bearer <JWT>")
    return principal


async def _credentials(state: RelayState, conn: HTTPConnection) -> tuple[Principal, RedeemedTicket | None]:
    """The WebSocket caller's principal from a Bearer JWT or a ticket subprotocol (then redeemed: the caller must
    restore it if the request is refused)."""
    principal = await _bearer(state, conn)
    if principal is not None:
        return principal, None
    ticket = _ticket(list(conn.scope.get("subprotocols") or []))
    if ticket is not None:
        redeemed = await state.limiter.redeem_ticket(ticket)
        if redeemed is None:
            raise AuthError("ticket unknown, expired or already used", code="invalid_ticket")
        return redeemed.principal, redeemed
    raise AuthError("missing credentials: send Authorization: Bearer <JWT> or a parley-ticket subprotocol")


async def admit(state: RelayState, conn: HTTPConnection) -> Admission:
    """Check a WebSocket request before accept. Raises a ParleyError that ``denial`` turns into a response; a
    ticket redeemed on the way is put back first."""
    if state.draining:
        raise ShuttingDown("the relay is shutting down; reconnect shortly")
    check_origin(state.settings, conn.headers.get("origin"), conn.headers.get("host"))
    principal, ticket = await _credentials(state, conn)
    try:
        provider = provider_for(
            state.settings, provider=conn.query_params.get("provider"), model=conn.query_params.get("model")
        )
        check_provider(principal, provider)
        kb = kb_for(state.settings, principal, conn.query_params.get("kb"))
        session_id = new_id("session")
        grant = await _acquire(state, slot_book(conn.app.state), principal.user_id, session_id)
    except BaseException:
        if ticket is not None:
            await _restore_ticket(state, ticket)
        raise
    offered = list(conn.scope.get("subprotocols") or [])
    subprotocol = REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None
    events = wants_parley_events(offered, conn.query_params.get(EVENTS_QUERY))
    return Admission(principal, provider, session_id, grant, subprotocol, kb, ticket, events)


async def _acquire(state: RelayState, slots: SlotBook, user_id: str, session_id: str) -> SessionGrant:
    try:
        return await state.limiter.acquire_session(user_id, session_id)
    except LimitExceeded as err:
        if err.code != "too_many_sessions" or not await slots.wait_for_ended(user_id):
            raise
    return await state.limiter.acquire_session(user_id, session_id)


async def withdraw(state: RelayState, admission: Admission) -> None:
    """Undo an admission whose session never started: its slot and start go back to the user, its ticket (if
    any) back to the store. Best effort: a lease the limiter could not drop expires by itself."""
    try:
        await state.limiter.refund_session(admission.principal.user_id, admission.session_id)
    except Exception as exc:
        logger.warning("could not refund a session that never started (%s); its lease will expire", exc)
    if admission.ticket is not None:
        await _restore_ticket(state, admission.ticket)


async def _restore_ticket(state: RelayState, ticket: RedeemedTicket) -> None:
    try:
        await state.limiter.restore_ticket(ticket)
    except Exception as exc:
        logger.warning("could not put a refused request's ticket back (%s); it needs a new one", exc)


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
        body: dict[str, str | int] = {"type": err.type, "code": err.code, "message": err.message}
        if "Retry-After" in headers:
            body["retry_after_s"] = int(headers["Retry-After"])
    else:
        logger.error("unexpected error during admission", exc_info=err)
        body = {"type": "server_error", "code": "internal_error", "message": "internal error"}
    return Response(
        json.dumps({"error": body}), status_code=status, headers=headers, media_type="application/json"
    )
