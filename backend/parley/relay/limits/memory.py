"""The in-process limiter: for one relay instance (``parley up``, tests). State lives in this process only.

Each method runs without awaiting anything, so on one event loop it is atomic by construction.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.relay.auth import Principal
from parley.relay.limits.base import (
    WINDOW_S,
    RedeemedTicket,
    SessionGrant,
    session_rate_limited,
    ticket_digest,
    ticket_ttl,
    too_many_sessions,
    valid_ticket,
)
from parley.settings import Settings


@dataclass
class _User:
    leases: dict[str, float] = field(default_factory=dict)  # session id -> lease expiry (unix time)
    starts: deque[tuple[float, str]] = field(default_factory=deque)  # (start time, session id), oldest first


class MemoryLimiter:
    def __init__(
        self, settings: Settings, *, clock: Callable[[], float] = time.time, window_s: float = WINDOW_S
    ) -> None:
        self._max_concurrent = settings.max_concurrent_sessions
        self._per_hour = settings.sessions_per_hour
        self._lease_s = float(settings.session_lease_s)
        self._duration_s = float(settings.session_max_duration_s)
        self._ticket_ttl_s = settings.ticket_ttl_s
        self._window_s = window_s
        self._clock = clock
        self._users: dict[str, _User] = {}
        self._tickets: dict[str, tuple[float, Principal]] = {}  # digest -> (expiry, principal), oldest first

    def _user(self, user_id: str, now: float) -> _User:
        user = self._users.setdefault(user_id, _User())
        for sid in [sid for sid, expiry in user.leases.items() if expiry <= now]:
            del user.leases[sid]
        while user.starts and user.starts[0][0] <= now - self._window_s:
            user.starts.popleft()
        return user

    def _forget_if_empty(self, user_id: str) -> None:
        user = self._users.get(user_id)
        if user is not None and not user.leases and not user.starts:
            del self._users[user_id]

    async def acquire_session(self, user_id: str, session_id: str) -> SessionGrant:
        now = self._clock()
        user = self._user(user_id, now)
        if session_id not in user.leases:
            if len(user.leases) >= self._max_concurrent:
                oldest = min(user.leases.values())
                raise too_many_sessions(len(user.leases), self._max_concurrent, oldest - now)
            if len(user.starts) >= self._per_hour:
                raise session_rate_limited(
                    len(user.starts), self._per_hour, user.starts[0][0] + self._window_s - now
                )
            user.starts.append((now, session_id))
        user.leases[session_id] = now + self._lease_s
        return SessionGrant(
            session_id=session_id,
            active=len(user.leases),
            max_concurrent=self._max_concurrent,
            starts_in_window=len(user.starts),
            per_hour=self._per_hour,
            expires_at=now + self._duration_s,
        )

    async def renew_session(self, user_id: str, session_id: str) -> bool:
        now = self._clock()
        user = self._user(user_id, now)
        if session_id not in user.leases:
            self._forget_if_empty(user_id)
            return False
        user.leases[session_id] = now + self._lease_s
        return True

    async def release_session(self, user_id: str, session_id: str) -> None:
        self._drop(user_id, session_id, refund=False)

    async def refund_session(self, user_id: str, session_id: str) -> None:
        self._drop(user_id, session_id, refund=True)

    def _drop(self, user_id: str, session_id: str, *, refund: bool) -> None:
        user = self._users.get(user_id)
        if user is not None:
            user.leases.pop(session_id, None)
            if refund:
                user.starts = deque(s for s in user.starts if s[1] != session_id)
            self._user(user_id, self._clock())
            self._forget_if_empty(user_id)

    async def issue_ticket(self, principal: Principal) -> tuple[str, int]:
        now = self._clock()
        self._drop_expired_tickets(now)
        ticket = secrets.token_urlsafe(32)
        ttl = ticket_ttl(self._ticket_ttl_s, principal, now)
        self._tickets[ticket_digest(ticket)] = (now + ttl, principal)
        return ticket, ttl

    async def redeem_ticket(self, ticket: str) -> RedeemedTicket | None:
        if not valid_ticket(ticket):
            return None
        entry = self._tickets.pop(ticket_digest(ticket), None)
        if entry is None or entry[0] <= self._clock():
            return None
        return RedeemedTicket(ticket, entry[1], entry[0])

    async def restore_ticket(self, redeemed: RedeemedTicket) -> bool:
        now = self._clock()
        if redeemed.expires_at <= now:
            return False
        self._tickets.setdefault(ticket_digest(redeemed.ticket), (redeemed.expires_at, redeemed.principal))
        return True

    def _drop_expired_tickets(self, now: float) -> None:
        # Insertion order is close to expiry order (every TTL is at most ticket_ttl_s; a restored ticket goes last),
        # so stop at the first live one.
        while self._tickets:
            digest, (expiry, _) = next(iter(self._tickets.items()))
            if expiry > now:
                break
            del self._tickets[digest]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
