"""Metrics of the relay's resilience: aborted slow clients, upstream failovers and how long they left the user
without an answer. Registered on the app's ``RelayMetrics`` registry, so ``/metrics`` shows them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ResilienceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.client_aborts = Counter(
            "parley_client_aborts",
            "Client connections reset because the client accepted nothing within PARLEY_CLIENT_STALL_S",
            ["reason"],
            registry=registry,
        )
        self.failovers = Counter(
            "parley_upstream_failovers",
            "Sessions whose upstream died: moved (to_provider set) or ended (outcome failed)",
            ["from_provider", "to_provider", "outcome"],
            registry=registry,
        )
        self.failover_gap = Histogram(
            "parley_failover_gap_seconds",
            "From the loss of a session's upstream to its new upstream being ready",
            buckets=GAP_BUCKETS,
            registry=registry,
        )
