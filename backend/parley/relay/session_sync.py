"""Which ``session.updated`` answers which ``session.update``, and what the client is shown of it.

GA clients expect ``session.created`` first, then one ``session.updated`` per ``session.update`` they send. The relay
sends its own update first (the operator's session); the upstream's ``session.created`` is kept back, and the answer
to the relay's update becomes the client's ``session.created``, so it shows the session as it really is. Each client
update goes through the policy (``policy.ClientSession``) and upstream with an event id the relay recognises; the
upstream answers updates in order, with ``session.updated`` or an ``error`` naming that event id. The client's
accepted fields count only once the upstream applied them. After a failover the relay's update of the new upstream
(the whole session, the client's fields included) is answered to nobody.

Pure: frames in, frames out.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from parley.errors import LimitExceeded, ParleyError
from parley.realtime.ids import new_id
from parley.relay import wire
from parley.relay.policy import Checked, ClientSession

logger = logging.getLogger(__name__)

EVENT_PREFIX = "parley_su_evt_"
MAX_PENDING = 16  # client updates not yet answered by the upstream

Kind = Literal["initial", "client", "move", "unsolicited"]


@dataclass(slots=True)
class _Pending:
    event_id: str
    kind: Kind
    client_event_id: str | None = None
    checked: Checked | None = None


@dataclass(slots=True)
class Answer:
    """What an upstream ``session.updated`` or ``error`` answered, and the frames for the client."""

    kind: Kind
    frames: list[str]


class SessionSync:
    def __init__(self, client: ClientSession, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self._pending: deque[_Pending] = deque()
        self._upstream_created: Any = None  # the session of the upstream's session.created

    def initial(self) -> str:
        """The relay's first ``session.update``: the operator's session."""
        return self._send(_Pending(new_id(EVENT_PREFIX.rstrip("_")), "initial"), self.client.full())

    def moved(self, operator: wire.UpstreamSessionConfig) -> str:
        """A new upstream replaced a dead one: its whole session, the client's accepted fields included."""
        self.client.operator = operator
        self._pending.clear()  # the dead upstream's answers will never come
        return self._send(_Pending(new_id(EVENT_PREFIX.rstrip("_")), "move"), self.client.full())

    def client_update(self, session: Any, client_event_id: str | None) -> tuple[str, ParleyError | None]:
        """A client's ``session.update``: the frame for the upstream and the error for what was refused.
        Raises InvalidRequest when nothing of it can be used."""
        if sum(p.kind == "client" for p in self._pending) >= MAX_PENDING:
            raise LimitExceeded("too many session.update events in flight", retry_after_s=0.5)
        checked = self.client.check(session)
        pending = _Pending(new_id(EVENT_PREFIX.rstrip("_")), "client", client_event_id, checked)
        return self._send(pending, checked.patch), checked.error()

    def _send(self, pending: _Pending, session: dict[str, Any]) -> str:
        self._pending.append(pending)
        return wire.session_update_event(session, pending.event_id)

    # --- the upstream's answers ---------------------------------------------------------------------------

    def on_created(self, ev: dict[str, Any]) -> None:
        self._upstream_created = ev.get("session")

    def on_updated(self, ev: dict[str, Any]) -> Answer:
        pending = self._pending.popleft() if self._pending else None
        session = ev.get("session")
        if pending is None:
            return Answer("unsolicited", [self._event("session.updated", ev, session)])
        if pending.kind == "initial":
            return Answer("initial", [self._event("session.created", ev, session)])
        if pending.kind == "move":
            return Answer("move", [])
        if pending.checked is not None:
            self.client.commit(pending.checked)
        return Answer("client", [self._event("session.updated", ev, session)])

    def on_error(self, ev: dict[str, Any]) -> Answer | None:
        """An upstream ``error``: the answer to one of the pending updates, or None when it is about no update."""
        err = ev.get("error")
        event_id = err.get("event_id") if isinstance(err, dict) else None
        pending = next((p for p in self._pending if p.event_id == event_id), None)
        if pending is None or not isinstance(err, dict):
            return None
        self._pending.remove(pending)
        if pending.kind == "client":
            shown = {**ev, "error": {**err, "event_id": pending.client_event_id}}
            return Answer("client", [wire.dumps(shown)])
        logger.warning(
            "upstream refused the relay's session.update (%s): %s", err.get("code"), err.get("message")
        )
        if pending.kind == "initial":  # the client still gets its session.created: the upstream's own session
            return Answer("initial", [self._event("session.created", ev, self._upstream_created)])
        return Answer(pending.kind, [])

    def _event(self, type_: str, ev: dict[str, Any], session: Any) -> str:
        event_id = ev.get("event_id") if isinstance(ev.get("event_id"), str) else new_id("event")
        if type_ == "session.created" and ev.get("type") == "error":
            event_id = new_id("event")
        view = self.client.view(session, self.session_id)
        return wire.dumps({"type": type_, "event_id": event_id, "session": view})
