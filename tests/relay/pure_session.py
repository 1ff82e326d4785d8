"""Helpers for the pure relay session tests: a session past its opening handshake."""

from __future__ import annotations

import json

from parley.relay.session import RelaySession


def opened(session: RelaySession, now: float = 0.0) -> RelaySession:
    """The relay's first session.update answered by the upstream, so the client has had ``session.created`` and
    frames reach it at once (before that they wait for it)."""
    session.start(now)
    session.on_upstream_text(json.dumps({"type": "session.created", "session": {"type": "realtime"}}), now)
    session.on_upstream_text(json.dumps({"type": "session.updated", "session": {"type": "realtime"}}), now)
    return session
