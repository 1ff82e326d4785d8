"""What the relay itself tells a client, and in which order.

- Parley's own events (``parley.session``, ``parley.context``, ``parley.turn``, ``parley.warning``) go only to
  clients that asked for them (``?parley_events=true`` or the subprotocol ``parley-events``): strict GA clients
  (the OpenAI Agents SDK validates every event) see a pure GA stream.
- Every client learns why its session ends: an ``error`` event with the reason as its code (``idle_timeout``,
  ``session_duration_limit``, ``server_shutdown``) before the close, whose code and reason say the same. Clients
  that asked also get ``parley.session`` (closed) as before.
- ``session.created`` is the first frame a client gets: anything the relay would send before it (an error about
  an early client frame) waits for it (``FirstFrame``).

Pure.
"""

from __future__ import annotations

import logging
from typing import Any

from parley.errors import DependencyError, InvalidRequest, ParleyError, error_event
from parley.relay import wire
from parley.relay.actions import Action, CloseSession, SessionConfig, ToClient

logger = logging.getLogger(__name__)

# close reasons every client is told of with an error event (others already come with their own error)
_CLOSE_ERRORS: dict[str, type[ParleyError]] = {
    "idle_timeout": InvalidRequest,
    "session_duration_limit": InvalidRequest,
    "server_shutdown": DependencyError,
}


class Notices:
    def __init__(self, cfg: SessionConfig) -> None:
        self.cfg = cfg

    @property
    def asked(self) -> bool:
        return self.cfg.parley_events

    def parley(self, frame: str) -> list[Action]:
        """A ``parley.*`` frame, for a client that asked for them."""
        return [ToClient(frame)] if self.asked else []

    def session(self, status: str, **extra: Any) -> list[Action]:
        if not self.asked:
            return []
        cfg = self.cfg
        frame = wire.parley_event(
            "parley.session",
            status=status,
            session_id=cfg.session_id,
            provider=cfg.provider,
            limits=cfg.limits,
            quota=cfg.quota,
            expires_at=cfg.expires_at,
            **extra,
        )
        return [ToClient(frame)]

    def closed(self, code: int, reason: str, message: str) -> list[Action]:
        out = self.session("closed", reason=reason, message=message)
        kind = _CLOSE_ERRORS.get(reason)
        if kind is not None:
            err = kind(message, code=reason)
            out.insert(0, ToClient(wire.dumps(error_event(err)), error_code=reason))
        return [*out, CloseSession(code, reason)]


class FirstFrame:
    """Holds what would reach the client before ``session.created`` and lets it follow that event."""

    LIMIT = 64

    def __init__(self) -> None:
        self.open = False
        self._held: list[Action] = []

    def filter(self, actions: list[Action]) -> list[Action]:
        if self.open:
            return actions
        out: list[Action] = []
        for action in actions:
            if self.open or not isinstance(action, ToClient | CloseSession):
                out.append(action)
            elif isinstance(action, CloseSession) or wire.peek_type(action.data) == "session.created":
                self.open = True  # the session begins (or ends before it began): everything goes, in order
                first = [action] if isinstance(action, ToClient) else []
                rest = [action] if isinstance(action, CloseSession) else []
                out.extend([*first, *self._held, *rest])
                self._held.clear()
            elif len(self._held) < self.LIMIT:
                self._held.append(action)
            else:
                logger.warning(
                    "a frame for the client before session.created was dropped (%d held)", self.LIMIT
                )
        return out
