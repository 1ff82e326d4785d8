"""The demo login: ``POST /v1/demo/ticket`` gives any caller a single-use ticket for one fixed demo user.

Mounted only when ``settings.demo_user`` is set (``parley up`` sets it to ``demo``); never in ``parley serve``
unless an operator asks for it. Everything else still holds: Origin, draining, and the demo user's per-user limits
at WebSocket admission (all demo visitors share them). The demo user may use the local provider only, so an
anonymous page can never spend the operator's cloud key.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from parley.relay.auth import Principal
from parley.relay.endpoint import ticket_response
from parley.relay.state import RelayState

logger = logging.getLogger(__name__)

DEMO_PROVIDERS = frozenset({"local"})


def demo_principal(user_id: str) -> Principal:
    return Principal(user_id, MappingProxyType({"sub": user_id, "parley_demo": True}), DEMO_PROVIDERS)


async def _demo(state: RelayState, request: Request) -> Principal:
    return demo_principal(state.settings.demo_user)


def _describe(principal: Principal) -> dict[str, Any]:
    return {"user": principal.user_id, "providers": sorted(DEMO_PROVIDERS)}


async def demo_ticket_endpoint(request: Request) -> Response:
    """A ticket for ``settings.demo_user``, no credentials: ``{"ticket", "expires_in", "user", "providers"}``."""
    response = await ticket_response(request, _demo, _describe)
    if response.status_code == 200:
        logger.info("issued a demo ticket")
    return response
