"""Parley's own events (``parley.*``) beside the GA protocol, and who gets them: only clients that ask, with the
query parameter ``parley_events=true`` (or 1, yes) or the WebSocket subprotocol ``parley-events`` (browsers). Other
clients get a pure GA stream, so strict ones (the OpenAI Agents SDK validates every event) see nothing they cannot
parse. The same rule at the relay and at the local voice server."""

from __future__ import annotations

EVENTS_SUBPROTOCOL = "parley-events"
EVENTS_QUERY = "parley_events"


def wants_parley_events(subprotocols: list[str], query: str | None) -> bool:
    """``query``: the value of ``?parley_events=`` (None when absent)."""
    return EVENTS_SUBPROTOCOL in subprotocols or (query or "").strip().lower() in ("true", "1", "yes")
