"""The relay's HTTP layer under uvicorn: request heads are bounded in size and time, pending ones are capped.

uvicorn's httptools protocol reads a request head for as long as the client takes and of any size, and hands a
WebSocket upgrade to the websockets-sansio protocol, whose parser refuses a header line over 8 KiB by queueing a
431 that uvicorn never writes: the client waits forever. ``guarded_http_protocol`` returns a subclass of the httptools
protocol that, for every request head:

- counts the connection as pending from the moment it is made (or its next request begins) until the head is
  complete, and refuses it at once with 503 when too many are pending, in all or from its IP (``PendingHeads``);
- gives the head ``handshake_timeout_s`` to arrive in full (else 408);
- refuses a request line over ``max_header_bytes`` (414), a header line over it, more than ``max_headers`` lines,
  or a head over ``max_head_bytes`` (431), before websockets' own limits can be reached;
- answers a malformed request with 400.

Each refusal is a small JSON body like the relay's other denials, ``Connection: close``, then the socket is closed;
it is logged at INFO as a refusal (rationed by ``parley.logs.RefusalRateLimit``). The size limits are at most
websockets' own (8 KiB lines, 128 headers), so what passes here never reaches the parser that stays silent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from parley.relay.pending import PendingHeads
from parley.settings import Settings

logger = logging.getLogger(__name__)

_LINGER_S = 1.0  # how long a refused connection is still read (and dropped) after its answer, at most
# The longest method, its space, and " HTTP/1.1\r\n": what a request line holds besides its URL.
_REQUEST_LINE_EXTRA = 20


@dataclass(frozen=True)
class HeadLimits:
    line_bytes: int
    head_bytes: int
    headers: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(
            settings.max_header_bytes,
            settings.max_head_bytes,
            settings.max_headers,
            settings.handshake_timeout_s,
        )


class HeadRefused(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def refusal_response(refusal: HeadRefused) -> bytes:
    """The whole HTTP response for a refused request head."""
    kind = "server_error" if refusal.status >= 500 else "invalid_request_error"
    body = json.dumps({"error": {"type": kind, "code": refusal.code, "message": refusal.message}}).encode()
    retry = b"retry-after: 5\r\n" if refusal.status == HTTPStatus.SERVICE_UNAVAILABLE else b""
    return b"".join(
        [
            f"HTTP/1.1 {refusal.status.value} {refusal.status.phrase}\r\n".encode(),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            retry,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def log_refusal(client: str, refusal: HeadRefused) -> None:
    logger.info(
        "refused a connection from %s: %d %s",
        client,
        refusal.status.value,
        refusal.code,
        extra={"refusal": True},
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads. Made per server by ``guarded_http_protocol``."""

    limits: ClassVar[HeadLimits]
    pending: ClassVar[PendingHeads]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = False
        self._refused = False
        self._ip = ""
        self._timer: asyncio.TimerHandle | None = None
        # Bytes received while this head was incomplete: a bound on what the parser holds of it.
        self._head_bytes = 0
        self._counted_bytes = 0  # request line and header lines seen so far, as they will be re-serialised
        self._header_lines = 0

    # --- the pending state: from connection (or the next request's first byte) to the end of the head ------------

    def _await_head(self) -> None:
        """Start waiting for a request head; raises ``HeadRefused`` when too many are pending."""
        reason = self.pending.enter(self._ip)
        if reason is not None:
            raise HeadRefused(HTTPStatus.SERVICE_UNAVAILABLE, "too_many_pending_connections", reason)
        self._awaiting_head = True
        self._head_bytes = self._counted_bytes = self._header_lines = 0
        self._timer = self.loop.call_later(self.limits.timeout_s, self._head_timed_out)

    def _head_over(self) -> None:
        if self._awaiting_head:
            self._awaiting_head = False
            self.pending.leave(self._ip)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._awaiting_head and not self._refused:
            self._refuse(
                HeadRefused(
                    HTTPStatus.REQUEST_TIMEOUT,
                    "request_timeout",
                    f"the request head did not arrive within {self.limits.timeout_s:g} s",
                )
            )

    def _refuse(self, refusal: HeadRefused) -> None:
        self._refused = True
        self._head_over()
        log_refusal(self._ip or "-", refusal)
        if self.cycle is None or self.cycle.response_complete:  # never inside a response being written
            self.transport.write(refusal_response(refusal))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # The answer, then FIN; what the client still sends is read and dropped for a moment (``data_received``), so
        # the close is not a reset that could destroy the answer before the client reads it. The client's own EOF
        # ends it sooner (``eof_received`` returns None: the transport closes itself).
        self.transport.write_eof()
        self._timer = self.loop.call_later(_LINGER_S, self.transport.close)

    # --- asyncio.Protocol -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._ip = self.client[0] if self.client else "-"
        try:
            self._await_head()
        except HeadRefused as refusal:
            self._refuse(refusal)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_over()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, HeadRefused):
                self._refuse(cause)
            else:
                self._refuse(
                    HeadRefused(HTTPStatus.BAD_REQUEST, "invalid_http_request", "invalid HTTP request")
                )
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.head_bytes:
                self._refuse(self._too_large("the request head is too large"))

    # --- httptools callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_head:  # the next request on a kept-alive connection
            self._await_head()

    def on_url(self, url: bytes) -> None:
        self._counted_bytes += len(url)
        if self._counted_bytes + _REQUEST_LINE_EXTRA > self.limits.line_bytes:
            raise HeadRefused(HTTPStatus.REQUEST_URI_TOO_LONG, "url_too_long", "the request URL is too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        line = len(name) + len(value) + 4  # "name: value\r\n", as uvicorn hands it to the WebSocket parser
        self._header_lines += 1
        self._counted_bytes += line
        if line > self.limits.line_bytes:
            raise self._too_large(f"a header line is longer than {self.limits.line_bytes} bytes")
        if self._header_lines > self.limits.headers:
            raise self._too_large(f"more than {self.limits.headers} header lines")
        if self._counted_bytes + _REQUEST_LINE_EXTRA > self.limits.head_bytes:
            raise self._too_large("the request head is too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_over()
        super().on_headers_complete()

    @staticmethod
    def _too_large(message: str) -> HeadRefused:
        return HeadRefused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header_too_large", message)


def guarded_http_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """A protocol class for one server (``uvicorn.Config(http=...)``): its own limits and pending counts."""
    pending = PendingHeads(settings.max_pending_handshakes, settings.max_pending_handshakes_per_ip)
    attrs = {"limits": HeadLimits.from_settings(settings), "pending": pending}
    return type("RelayHttpProtocol", (GuardedHttpProtocol,), attrs)
