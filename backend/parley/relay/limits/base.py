"""The limiter interface: per-user session leases and hourly starts, and single-use browser tickets.

Two backends keep the same contract: ``MemoryLimiter`` (one process) and ``RedisLimiter`` (any number of relay
instances sharing one Redis). A session holds a *lease* that the relay renews while the session lives, so the
slot of a crashed relay frees itself after ``session_lease_s``. Starts are counted in a sliding one-hour window;
a refused attempt is not counted, and a grant whose session never started (its upstream could not be reached) is
given back with ``refund_session``. A ticket is redeemed (taken out of the store, so no one else can use it) while
its request is admitted; a request refused after that puts it back with ``restore_ticket``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from parley.errors import LimitExceeded
from parley.relay.auth import Principal

WINDOW_S = 3600.0
MIN_RETRY_AFTER_S = 1.0
_TICKET_RE = re.compile(r"[A-Za-z0-9_-]{20,128}")


@dataclass(frozen=True)
class SessionGrant:
    """A granted session: counts include this session; ``expires_at`` is the unix time its duration ends."""

    session_id: str
    active: int
    max_concurrent: int
    starts_in_window: int
    per_hour: int
    expires_at: float


@dataclass(frozen=True)
class RedeemedTicket:
    """A ticket taken out of the store: its principal, and when it would have expired (the backend's clock)."""

    ticket: str = field(repr=False)
    principal: Principal
    expires_at: float


@runtime_checkable
class Limiter(Protocol):
    async def acquire_session(self, user_id: str, session_id: str) -> SessionGrant:
        """Atomically grant a session or raise LimitExceeded (``too_many_sessions`` / ``session_rate_limited``).

        Acquiring a session id that already holds a live lease renews it and counts no new start (a safe retry).
        """
        ...

    async def renew_session(self, user_id: str, session_id: str) -> bool:
        """Extend the session's lease; False when the lease was lost (expired or released)."""
        ...

    async def release_session(self, user_id: str, session_id: str) -> None:
        """Free the session's slot; its start stays counted."""
        ...

    async def refund_session(self, user_id: str, session_id: str) -> None:
        """Undo a grant whose session never started: free its slot and give back the start it counted."""
        ...

    async def issue_ticket(self, principal: Principal) -> tuple[str, int]:
        """A single-use url-safe ticket for ``principal`` and its lifetime in seconds."""
        ...

    async def redeem_ticket(self, ticket: str) -> RedeemedTicket | None:
        """Take the ticket out of the store atomically (one caller wins); None if unknown, expired or already used."""
        ...

    async def restore_ticket(self, redeemed: RedeemedTicket) -> bool:
        """Put a redeemed ticket back until its original expiry (its request was refused); False when it has
        expired meanwhile."""
        ...

    async def ping(self) -> None:
        """Raise DependencyError when the backend is unreachable."""
        ...

    async def aclose(self) -> None: ...


def too_many_sessions(active: int, max_concurrent: int, retry_after_s: float) -> LimitExceeded:
    return LimitExceeded(
        f"too many concurrent sessions ({active} of {max_concurrent})",
        retry_after_s=retry_after(retry_after_s),
        code="too_many_sessions",
    )


def session_rate_limited(starts: int, per_hour: int, retry_after_s: float) -> LimitExceeded:
    return LimitExceeded(
        f"too many sessions started in the last hour ({starts} of {per_hour})",
        retry_after_s=retry_after(retry_after_s),
        code="session_rate_limited",
    )


def retry_after(seconds: float) -> float:
    """Whole seconds, at least one (what a Retry-After header can carry)."""
    return float(max(MIN_RETRY_AFTER_S, math.ceil(seconds)))


def ticket_ttl(ticket_ttl_s: int, principal: Principal, now: float) -> int:
    """The ticket lifetime: the setting, but never past the token's own expiry (at least one second)."""
    exp = principal.claims.get("exp")
    ttl = int(ticket_ttl_s)
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        ttl = min(ttl, int(exp - now))
    return max(1, ttl)


def valid_ticket(ticket: object) -> bool:
    return isinstance(ticket, str) and _TICKET_RE.fullmatch(ticket) is not None


def ticket_digest(ticket: str) -> str:
    """Backends store tickets under their SHA-256, so the store never holds a usable ticket."""
    return hashlib.sha256(ticket.encode()).hexdigest()


def principal_to_json(principal: Principal) -> str:
    providers = sorted(principal.providers) if principal.providers is not None else None
    return json.dumps(
        {"user_id": principal.user_id, "claims": dict(principal.claims), "providers": providers},
        separators=(",", ":"),
        default=str,
    )


def principal_from_json(data: str | bytes) -> Principal:
    obj = json.loads(data)
    providers = obj.get("providers")
    return Principal(
        user_id=obj["user_id"],
        claims=MappingProxyType(dict(obj.get("claims") or {})),
        providers=frozenset(providers) if providers is not None else None,
    )
