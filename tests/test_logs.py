"""Logs keep secrets out: tokens in URLs are redacted, refused handshakes are not errors."""

from __future__ import annotations

import logging

from parley.logs import RedactFilter


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
    assert RedactFilter().filter(r)
    assert (r.levelno, r.levelname) == (logging.INFO, "INFO")
    other = record("uvicorn.error", logging.ERROR, "Exception in ASGI application")
    RedactFilter().filter(other)
    assert other.levelno == logging.ERROR
