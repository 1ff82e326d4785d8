"""Logging set-up: one JSON object per line (or plain text), with the session and user of the current task.

``session_id`` / ``user_id`` come from context variables the relay sets per session task (``log_context``), or
from ``extra=``. Nothing here logs payloads; callers never pass audio, tokens or keys.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from parley.settings import Settings

session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("parley_session_id", default=None)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("parley_user_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def log_context(*, session_id: str | None, user_id: str | None) -> Iterator[None]:
    t1 = session_id_var.set(session_id)
    t2 = user_id_var.set(user_id)
    try:
        yield
    finally:
        session_id_var.reset(t1)
        user_id_var.reset(t2)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "session_id", None) is None:
            record.session_id = session_id_var.get()
        if getattr(record, "user_id", None) is None:
            record.user_id = user_id_var.get()
        return True


_SECRET_QUERY = re.compile(
    r"([?&](?:token|access_token|id_token|ticket|api_key|apikey|key|jwt|authorization|password)=)[^&\s\"']+",
    re.I,
)
_REFUSED_HANDSHAKE = "ASGI callable returned without completing handshake"


class RedactFilter(logging.Filter):
    """Secrets a client put in a URL (``?token=...``) never reach the log, whoever logs the URL (uvicorn logs
    WebSocket paths with their query). (Lines a client can cause are made INFO by ``ClientFaultFilter``.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the formatter
            return True
        redacted = _SECRET_QUERY.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# Lines uvicorn logs at ERROR (one with a traceback) that any client can cause: the client's fault, not the server's.
_CLIENT_FAULTS = (_REFUSED_HANDSHAKE, "Invalid UTF-8 sequence received from client")


class ClientFaultFilter(logging.Filter):
    """On the ``uvicorn.error`` logger, so every handler sees it: a line a client caused (a refused handshake, a
    text frame that is not UTF-8) becomes INFO without a traceback, and counts as a refusal (rationed by
    ``RefusalRateLimit``), so nobody can fill the error log from outside."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str) and msg.startswith(_CLIENT_FAULTS):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
            record.refusal = True
        return True


def install_client_fault_filter() -> None:
    """Install ``ClientFaultFilter`` on ``uvicorn.error`` (once)."""
    log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientFaultFilter) for f in log.filters):
        log.addFilter(ClientFaultFilter())


_UVICORN_WS_403 = '%s - "WebSocket %s" 403'
# uvicorn's (and websockets', under uvicorn's logger) lines about an answered handshake: where their status is.
_UVICORN_STATUS_AT = {
    '%s - "WebSocket %s" %d': 2,
    "connection rejected (%d %s)": 0,
    "HTTP response sent (%d %s)": 0,
}


def is_refusal(record: logging.LogRecord) -> bool:
    """A line about a refused connection or handshake: marked (``extra={"refusal": True}``, or by
    ``ClientFaultFilter``) or one of uvicorn's status lines."""
    if getattr(record, "refusal", False):
        return True
    msg = record.msg
    if not record.name.startswith("uvicorn") or not isinstance(msg, str):
        return False
    if msg == _UVICORN_WS_403:
        return True
    at, args = _UVICORN_STATUS_AT.get(msg), record.args
    if at is None or not isinstance(args, tuple) or len(args) <= at:
        return False
    status = args[at]
    return isinstance(status, int) and status >= 400


class RefusalRateLimit(logging.Filter):
    """Anyone can make the relay refuse connections, so refusal lines are rationed: at most ``burst`` per
    ``interval_s`` (a fixed window); the others are dropped and counted, and the count is added to the next refusal
    line that is logged (``suppressed=N``). Other lines pass untouched."""

    def __init__(self, burst: int, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = -math.inf
        self._logged = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_refusal(record):
            return True
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.interval_s:
                self._window_start, self._logged = now, 0
            if self._logged >= self.burst:
                self._suppressed += 1
                return False
            self._logged += 1
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} more refusals not logged)"
            record.args = None
            record.suppressed = suppressed
        return True


class TextFormatter(logging.Formatter):
    """Plain lines; the session/user tag appears only when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        sid, uid = getattr(record, "session_id", None), getattr(record, "user_id", None)
        record.tag = f" [{sid or '-'} {uid or '-'}]" if (sid or uid) else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    handler.addFilter(RefusalRateLimit(settings.refusal_log_burst, settings.refusal_log_interval_s))
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s%(tag)s %(message)s"))
    install_client_fault_filter()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # uvicorn.access lines carry query strings (the relay keeps secrets out of URLs anyway); httpx logs every
    # health probe at INFO. Both are noise at INFO.
    for name in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
