"""Per-user limits behind one interface: Redis when ``PARLEY_REDIS_URL`` is set, in-process memory otherwise."""

from __future__ import annotations

from parley.relay.limits.audio_rate import AudioRateLimiter
from parley.relay.limits.base import Limiter, SessionGrant
from parley.relay.limits.memory import MemoryLimiter
from parley.relay.limits.redis import RedisLimiter
from parley.settings import Settings

__all__ = ["AudioRateLimiter", "Limiter", "MemoryLimiter", "RedisLimiter", "SessionGrant", "make_limiter"]


def make_limiter(settings: Settings) -> Limiter:
    """The limiter the settings ask for. The Redis client connects lazily: call ``ping()`` to check it."""
    if settings.redis_url:
        return RedisLimiter(settings)
    return MemoryLimiter(settings)
