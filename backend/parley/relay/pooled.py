"""An ``Upstream`` over a pool of upstreams, that can move to another one when its connection dies.

``UpstreamPools`` is the relay app's ``upstream_factory``: for a provider it returns a ``PooledUpstream``, which
connects to the pool's best candidate (``pool.Pool``), counting its load while the session lasts. When the
connection dies mid-session the runtime calls ``move``: the dead member is marked down, and the session connects
to the next candidate of the same provider, else (when the operator allows it and the user's token does) to the
local provider. The conversation is replayed by the session (``replay``), not here: this module only connects.
Connections are made by the wrapped factory (``WebSocketUpstream`` in production, anything in tests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from parley.errors import UpstreamUnavailable
from parley.relay.pool import Pool
from parley.relay.upstream import CLOSE_TIMEOUT_S, ProviderConfig, Upstream, provider_config
from parley.settings import Settings

logger = logging.getLogger(__name__)

Factory = Callable[[ProviderConfig], Upstream]


class UpstreamPools:
    """The pools of one relay app, one per provider configuration; ``open`` is its ``upstream_factory``."""

    def __init__(self, settings: Settings, connect: Factory, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._connect = connect
        self._pools: dict[tuple[str, tuple[str, ...]], Pool] = {}
        self.clock = clock

    def pool(self, cfg: ProviderConfig) -> Pool:
        urls = cfg.urls or (cfg.url,)
        key = (cfg.name, urls)
        if key not in self._pools:
            self._pools[key] = Pool(urls, cooldown_s=self.settings.upstream_cooldown_s)
        return self._pools[key]

    def pool_of(self, provider: str) -> Pool:
        """The pool the relay's settings give ``provider`` (e.g. for readiness checks and tests)."""
        return self.pool(provider_config(self.settings, provider))

    def open(self, cfg: ProviderConfig) -> PooledUpstream:
        return PooledUpstream(self, cfg)

    def fallback(self, provider: str) -> ProviderConfig | None:
        """Where a session of ``provider`` may go when its own pool has nothing left."""
        if provider == "openai" and self.settings.failover_to_local:
            return provider_config(self.settings, "local")
        return None


class PooledUpstream:
    def __init__(self, pools: UpstreamPools, cfg: ProviderConfig) -> None:
        self._pools = pools
        self.cfg = cfg
        self._conn: Upstream | None = None
        self._url: str | None = None
        self._pool: Pool | None = None

    async def connect(self) -> None:
        await self._connect_to(self.cfg)

    async def _connect_to(self, cfg: ProviderConfig) -> None:
        pool = self._pools.pool(cfg)
        last: UpstreamUnavailable | None = None
        for url in pool.candidates(self._pools.clock()):
            conn = self._pools._connect(replace(cfg, url=url))
            try:
                await conn.connect()
            except UpstreamUnavailable as exc:
                pool.mark_down(url, self._pools.clock())
                logger.warning("upstream %s member %d unavailable", cfg.name, _index(pool, url))
                last = exc
                continue
            pool.mark_up(url)
            pool.acquire(url)
            self._conn, self._url, self._pool, self.cfg = conn, url, pool, cfg
            return
        raise last or UpstreamUnavailable(f"the {cfg.name} voice provider is unreachable")

    @property
    def _current(self) -> Upstream:
        if self._conn is None:
            raise UpstreamUnavailable(f"the {self.cfg.name} voice provider is not connected")
        return self._conn

    async def send(self, data: str) -> None:
        await self._current.send(data)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._current.__aiter__()

    async def close(self) -> None:
        await self._drop(dead=False)

    async def move(self, allowed: Callable[[str], bool]) -> ProviderConfig | None:
        """The connection died: connect elsewhere (see the module doc). Returns the provider now used, or None
        when nothing is left (the session then ends)."""
        await self._drop(dead=True)
        targets = [self.cfg]
        fallback = self._pools.fallback(self.cfg.name)
        if fallback is not None and allowed(fallback.name):
            targets.append(fallback)
        for cfg in targets:
            try:
                await self._connect_to(cfg)
            except UpstreamUnavailable:
                continue
            return cfg
        return None

    async def _drop(self, *, dead: bool) -> None:
        conn, url, pool = self._conn, self._url, self._pool
        self._conn = self._url = self._pool = None
        if conn is None or url is None or pool is None:
            return
        pool.release(url)
        if dead:
            pool.mark_down(url, self._pools.clock())
        try:
            # a last bound for upstreams that do not bound their own close; longer than WebSocketUpstream's (2 x
            # CLOSE_TIMEOUT_S, then it aborts the transport), so that abort can still run
            async with asyncio.timeout(CLOSE_TIMEOUT_S * 3):
                await conn.close()
        except Exception as exc:
            logger.debug("upstream close failed: %s", type(exc).__name__)


def _index(pool: Pool, url: str) -> int:
    """A member's position, for logs (URLs may carry secrets in their query)."""
    return next(i for i, m in enumerate(pool.members) if m.url == url)
