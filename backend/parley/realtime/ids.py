"""Ids in the OpenAI style: a short prefix and 20 random url-safe characters."""

from __future__ import annotations

import secrets

_PREFIX = {
    "event": "event_",
    "item": "item_",
    "response": "resp_",
    "session": "sess_",
    "conversation": "conv_",
}


def new_id(kind: str) -> str:
    return _PREFIX.get(kind, kind + "_") + secrets.token_urlsafe(15)[:20]
