"""Prometheus metrics of one relay app (its own registry, so two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

TURN_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

__all__ = ["CONTENT_TYPE_LATEST", "RelayMetrics"]


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge(
            "parley_sessions_active", "Open relay sessions", ["provider"], registry=r
        )
        self.sessions_total = Counter("parley_sessions", "Relay sessions started", ["provider"], registry=r)
        self.turns_total = Counter("parley_turns", "Turns answered", ["provider"], registry=r)
        self.turn_latency = Histogram(
            "parley_turn_latency_seconds",
            "Turn stage time after the end of speech (transcript, retrieval, response_created, first_audio)",
            ["stage", "provider"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.errors_total = Counter(
            "parley_errors", "Error events sent to clients, by code", ["code"], registry=r
        )
        self.limit_rejections = Counter(
            "parley_limit_rejections", "Refused by a limit, by reason", ["reason"], registry=r
        )
        self.auth_rejections = Counter(
            "parley_auth_rejections",
            "WebSocket or ticket requests refused by auth, by code",
            ["code"],
            registry=r,
        )
        self.upstream_failures = Counter(
            "parley_upstream_failures",
            "Upstream connects that failed or sessions it dropped",
            ["provider"],
            registry=r,
        )
        self.context_outcomes = Counter(
            "parley_context_lookups",
            "Context lookups by outcome (ok, timeout, error)",
            ["status"],
            registry=r,
        )
        self.turn_context = Counter(
            "parley_turn_context",
            "Turns answered, by context outcome (ok, empty, off, timeout, error) and whether the lookup was "
            "speculative (done during the pause)",
            ["status", "speculative"],
            registry=r,
        )
        self.context_latency = Histogram(
            "parley_context_lookup_seconds",
            "Knowledge-base lookup time (embedding + search), speculative (during the pause) or final",
            ["kind"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0),
            registry=r,
        )

    def observe_turn(self, provider: str, timings_ms: dict[str, float | None]) -> None:
        self.turns_total.labels(provider).inc()
        for stage, ms in timings_ms.items():
            if ms is not None:
                self.turn_latency.labels(stage, provider).observe(ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
