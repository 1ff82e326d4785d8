"""What every frame a server writes must be, checked the same way by every fuzz test: strict JSON (no NaN, no
duplicate keys), UTF-8 encodable, and protocol ``error`` events in the GA shape."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings

# Deterministic in CI: the same examples every run, no example database, no per-example deadline.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
FUZZ_SLOW = settings(FUZZ, max_examples=60)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise AssertionError(f"{name} in a frame")


def strict_loads(data: str) -> Any:
    """The frame as a strict JSON parser reads it; fails on anything one would refuse or read differently."""
    data.encode("utf-8")  # a lone surrogate cannot be sent as UTF-8
    return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_surrogates(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for v in value:
            _no_surrogates(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_surrogates(k)
            _no_surrogates(v)


def sendable(data: str) -> Any:
    """A frame a server sends: strict JSON that decodes to text without lone surrogates (``json.dumps`` may
    escape one as ``\\ud800``, which is ASCII but still not Unicode)."""
    value = strict_loads(data)
    _no_surrogates(value)
    return value


def check_error_event(event: dict[str, Any]) -> dict[str, Any]:
    """An ``error`` event in the GA shape; returns its ``error`` object."""
    assert event["type"] == "error", event
    assert isinstance(event.get("event_id"), str), event
    err = event["error"]
    assert isinstance(err, dict), event
    assert err["type"] in ("invalid_request_error", "server_error"), event
    assert isinstance(err["code"], str) and err["code"], event
    assert isinstance(err["message"], str) and err["message"], event
    assert "param" in err and "event_id" in err, event
    assert err["event_id"] is None or isinstance(err["event_id"], str), event
    return err
