"""Logs keep secrets out: tokens in URLs are redacted, refused handshakes are not errors."""

from __future__ import annotations

import logging

from parley.logs import ClientFaultFilter, RedactFilter, RefusalRateLimit, is_refusal, setup_logging
from parley.settings import Settings


def record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_tokens_in_urls_are_redacted_whoever_logs_them() -> None:
    r = record(
        "uvicorn.error",
        logging.INFO,
        '%s - "WebSocket %s" 403',
        "1.2.3.4:5",
        "/ws/voice?token=eyJabc.def&x=1",
    )
    assert RedactFilter().filter(r)
    assert r.getMessage() == '1.2.3.4:5 - "WebSocket /ws/voice?token=[redacted]&x=1" 403'
    r = record("parley.relay", logging.WARNING, "GET /v1/realtime?model=m&API_KEY=sk-123 failed")
    RedactFilter().filter(r)
    assert "sk-123" not in r.getMessage() and "model=m" in r.getMessage()


def test_a_refused_handshake_is_logged_at_info() -> None:
    r = record("uvicorn.error", logging.ERROR, "ASGI callable returned without completing handshake.")
    assert ClientFaultFilter().filter(r) and RedactFilter().filter(r)
    assert (r.levelno, r.levelname) == (logging.INFO, "INFO")
    other = record("uvicorn.error", logging.ERROR, "Exception in ASGI application")
    ClientFaultFilter().filter(other)
    RedactFilter().filter(other)
    assert other.levelno == logging.ERROR


def test_refusal_lines_are_rationed_per_interval_and_the_rest_counted() -> None:
    now = [0.0]
    limit = RefusalRateLimit(2, 10.0, clock=lambda: now[0])
    refusal = [record("parley.relay.endpoint", logging.INFO, "refused: %s", "x") for _ in range(5)]
    for r in refusal:
        r.refusal = True
    assert [limit.filter(r) for r in refusal] == [True, True, False, False, False]
    assert limit.filter(record("parley.relay.endpoint", logging.INFO, "session started"))  # not a refusal
    uvicorn_403 = record("uvicorn.error", logging.INFO, '%s - "WebSocket %s" 403', "1.2.3.4:5", "/ws/voice")
    assert not limit.filter(uvicorn_403)  # uvicorn's refusal lines share the ration
    now[0] = 10.0
    nxt = record("uvicorn.error", logging.INFO, '%s - "WebSocket %s" %d', "1.2.3.4:5", "/ws/voice", 429)
    assert limit.filter(nxt)
    assert nxt.suppressed == 4  # type: ignore[attr-defined]
    assert nxt.getMessage() == '1.2.3.4:5 - "WebSocket /ws/voice" 429 (4 more refusals not logged)'


def test_what_counts_as_a_refusal_line() -> None:
    accepted = record(
        "uvicorn.error", logging.INFO, '%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws/voice"
    )
    ok = record("uvicorn.error", logging.INFO, '%s - "WebSocket %s" %d', "1.2.3.4:5", "/ws/voice", 101)
    rejected = record("uvicorn.error", logging.INFO, "connection rejected (%d %s)", 401, "Unauthorized")
    handshake = record("uvicorn.error", logging.ERROR, "ASGI callable returned without completing handshake.")
    ClientFaultFilter().filter(handshake)  # on uvicorn.error itself, before any handler
    assert not is_refusal(accepted) and not is_refusal(ok)
    assert is_refusal(rejected) and is_refusal(handshake)


def test_setup_logging_rations_refusals() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(Settings(refusal_log_burst=3, refusal_log_interval_s=60.0))
        filters = root.handlers[0].filters
        assert any(isinstance(f, RefusalRateLimit) and (f.burst, f.interval_s) == (3, 60.0) for f in filters)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
