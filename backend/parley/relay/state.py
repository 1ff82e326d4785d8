"""What one relay app holds: settings, verifier, limiter, context provider, metrics, and its live sessions.

``upstream_factory`` makes the connections; the state wraps it in ``UpstreamPools`` (``upstreams``), so what the
endpoint gets from ``state.upstream_factory`` is a pooled upstream that can fail over (see ``pooled``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parley.relay.auth import JWTVerifier
from parley.relay.context import ContextProvider
from parley.relay.limits.base import Limiter
from parley.relay.metrics import RelayMetrics
from parley.relay.pooled import UpstreamPools
from parley.relay.resilience_metrics import ResilienceMetrics
from parley.relay.upstream import ProviderConfig, Upstream, WebSocketUpstream
from parley.settings import Settings

if TYPE_CHECKING:
    from parley.relay.runtime import SessionRuntime


def _websocket_upstream(cfg: ProviderConfig) -> Upstream:
    return WebSocketUpstream(cfg)


@dataclass
class RelayState:
    settings: Settings
    verifier: JWTVerifier
    limiter: Limiter
    context: ContextProvider
    metrics: RelayMetrics = field(default_factory=RelayMetrics)
    upstream_factory: Callable[[ProviderConfig], Upstream] = _websocket_upstream
    sessions: set[SessionRuntime] = field(default_factory=set)
    draining: bool = False
    resilience: ResilienceMetrics = field(init=False)
    upstreams: UpstreamPools = field(init=False)

    def __post_init__(self) -> None:
        self.resilience = ResilienceMetrics(self.metrics.registry)
        self.upstreams = UpstreamPools(self.settings, self.upstream_factory)
        self.upstream_factory = self.upstreams.open
