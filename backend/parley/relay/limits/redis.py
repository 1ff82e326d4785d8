"""The Redis limiter: any number of relay instances sharing one Redis hold the per-user caps exactly.

Every decision is one Lua script (EVALSHA via ``register_script``) that reads the clock with Redis ``TIME``, so
instances with skewed clocks agree. Per-user keys share a hash tag (``parley:{user:<id>}:leases`` and ``:starts``)
and so one Redis Cluster slot. ``leases`` is a sorted set of session ids scored by lease expiry (ms); ``starts`` a
sorted set of starts scored by start time (ms), members ``<ms>:<session id>`` (so a refund finds its start).
Tickets are stored under their SHA-256 with a PX expiry; redeeming takes the record out (GET, PTTL, DEL in one
script) and remembers its expiry, so a refused request can put it back for the time it had left.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parley.errors import DependencyError
from parley.relay.auth import Principal
from parley.relay.limits.base import (
    WINDOW_S,
    RedeemedTicket,
    SessionGrant,
    principal_from_json,
    principal_to_json,
    session_rate_limited,
    ticket_digest,
    ticket_ttl,
    too_many_sessions,
    valid_ticket,
)
from parley.settings import Settings

log = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: leases, starts. ARGV: session id, max concurrent, per window, lease ms, window ms.
# Returns {status, active, starts, retry_after_ms, now_ms}; status 0 = granted, 1 = too many, 2 = rate limited.
_ACQUIRE = (
    _NOW_MS
    + """
local sid = ARGV[1]
local max_concurrent = tonumber(ARGV[2])
local per_window = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local active = redis.call('ZCARD', KEYS[1])
local starts = redis.call('ZCARD', KEYS[2])
if not redis.call('ZSCORE', KEYS[1], sid) then
  if active >= max_concurrent then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, active, starts, tonumber(oldest[2]) - now, now}
  end
  if starts >= per_window then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, active, starts, tonumber(oldest[2]) + window - now, now}
  end
  redis.call('ZADD', KEYS[2], now, string.format('%d:%s', now, sid))
  redis.call('PEXPIRE', KEYS[2], window)
  active = active + 1
  starts = starts + 1
end
redis.call('ZADD', KEYS[1], now + lease, sid)
redis.call('PEXPIRE', KEYS[1], lease)
return {0, active, starts, 0, now}
"""
)

# KEYS: leases. ARGV: session id, lease ms. Returns 1 when renewed, 0 when the lease was lost.
_RENEW = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""
)

# KEYS: leases, starts. ARGV: session id, window ms, refund (1: also drop the session's start). Drops the lease
# and stale entries.
_RELEASE = (
    _NOW_MS
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  local suffix = ':' .. ARGV[1]
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if string.sub(member, -string.len(suffix)) == suffix then
      redis.call('ZREM', KEYS[2], member)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""
)

# Returns the server's unix time in ms.
_TIME = _NOW_MS + "return now\n"

# KEYS: ticket. Returns {record, expiry ms} and deletes it, or nil when absent.
_REDEEM = (
    _NOW_MS
    + """
local record = redis.call('GET', KEYS[1])
if not record then
  return nil
end
local left = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
return {record, now + left}
"""
)

# KEYS: ticket. ARGV: record, expiry ms. Stores it back (never over another record) for the time it has left.
_RESTORE = (
    _NOW_MS
    + """
local left = tonumber(ARGV[2]) - now
if left <= 0 then
  return 0
end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', left, 'NX') then
  return 1
end
return 0
"""
)


def user_keys(user_id: str) -> tuple[str, str]:
    """The user's (leases, starts) keys; the hash tag keeps both in one cluster slot."""
    tag = f"parley:{{user:{user_id}}}"
    return f"{tag}:leases", f"{tag}:starts"


def ticket_key(ticket: str) -> str:
    return f"parley:ticket:{ticket_digest(ticket)}"


class RedisLimiter:
    def __init__(
        self,
        settings: Settings,
        *,
        client: aioredis.Redis | None = None,
        window_s: float = WINDOW_S,
    ) -> None:
        if client is None:
            if not settings.redis_url:
                raise ValueError("RedisLimiter needs PARLEY_REDIS_URL")
            client = aioredis.Redis.from_url(
                settings.redis_url, socket_timeout=5.0, socket_connect_timeout=3.0, health_check_interval=30
            )
        self._redis = client
        self._max_concurrent = settings.max_concurrent_sessions
        self._per_hour = settings.sessions_per_hour
        self._lease_ms = max(1, math.ceil(float(settings.session_lease_s) * 1000))
        self._duration_s = float(settings.session_max_duration_s)
        self._ticket_ttl_s = settings.ticket_ttl_s
        self._window_ms = max(1, math.ceil(window_s * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._time = client.register_script(_TIME)
        self._redeem = client.register_script(_REDEEM)
        self._restore = client.register_script(_RESTORE)

    @asynccontextmanager
    async def _backend(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except RedisError as exc:
            log.warning("limiter backend failed during %s: %s", what, type(exc).__name__)
            raise DependencyError(f"limiter backend (Redis) unavailable during {what}") from exc

    async def acquire_session(self, user_id: str, session_id: str) -> SessionGrant:
        args: list[str | int] = [
            session_id,
            self._max_concurrent,
            self._per_hour,
            self._lease_ms,
            self._window_ms,
        ]
        async with self._backend("acquire_session"):
            reply: Any = await self._acquire(keys=list(user_keys(user_id)), args=args)
        status, active, starts, retry_ms, now_ms = (int(v) for v in reply)
        if status == 1:
            raise too_many_sessions(active, self._max_concurrent, retry_ms / 1000)
        if status == 2:
            raise session_rate_limited(starts, self._per_hour, retry_ms / 1000)
        return SessionGrant(
            session_id=session_id,
            active=active,
            max_concurrent=self._max_concurrent,
            starts_in_window=starts,
            per_hour=self._per_hour,
            expires_at=now_ms / 1000 + self._duration_s,
        )

    async def renew_session(self, user_id: str, session_id: str) -> bool:
        leases, _ = user_keys(user_id)
        async with self._backend("renew_session"):
            reply: Any = await self._renew(keys=[leases], args=[session_id, self._lease_ms])
        return int(reply) == 1

    async def release_session(self, user_id: str, session_id: str) -> None:
        async with self._backend("release_session"):
            await self._release(keys=list(user_keys(user_id)), args=[session_id, self._window_ms, 0])

    async def refund_session(self, user_id: str, session_id: str) -> None:
        async with self._backend("refund_session"):
            await self._release(keys=list(user_keys(user_id)), args=[session_id, self._window_ms, 1])

    async def issue_ticket(self, principal: Principal) -> tuple[str, int]:
        ticket = secrets.token_urlsafe(32)
        async with self._backend("issue_ticket"):
            now_ms: Any = await self._time(keys=[], args=[])
            ttl = ticket_ttl(self._ticket_ttl_s, principal, int(now_ms) / 1000)
            stored = await self._redis.set(
                ticket_key(ticket), principal_to_json(principal), px=ttl * 1000, nx=True
            )
        if (
            not stored
        ):  # 256 random bits collided: never in practice, but do not hand out someone else's ticket
            raise DependencyError("could not store the ticket")
        return ticket, ttl

    async def redeem_ticket(self, ticket: str) -> RedeemedTicket | None:
        if not valid_ticket(ticket):
            return None
        async with self._backend("redeem_ticket"):
            reply: Any = await self._redeem(keys=[ticket_key(ticket)], args=[])
        if reply is None:
            return None
        data, expires_ms = reply
        try:
            return RedeemedTicket(ticket, principal_from_json(data), int(expires_ms) / 1000)
        except (ValueError, KeyError, TypeError):
            log.warning("discarded an unreadable ticket record")
            return None

    async def restore_ticket(self, redeemed: RedeemedTicket) -> bool:
        record = principal_to_json(redeemed.principal)
        expires_ms = math.floor(redeemed.expires_at * 1000)
        async with self._backend("restore_ticket"):
            reply: Any = await self._restore(keys=[ticket_key(redeemed.ticket)], args=[record, expires_ms])
        return int(reply) == 1

    async def ping(self) -> None:
        async with self._backend("ping"):
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()
