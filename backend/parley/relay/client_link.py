"""The relay's one way to write to a client: every send and the close are held to a deadline.

A client that stops reading fills its receive buffer, then the relay's socket buffer, then the transport's; from
there a send (and a polite close, which is a send too) waits for the socket to become writable, forever if the
client never reads. So each send and the close get ``deadline_s``. Past it the connection is aborted: ``SO_LINGER``
0 and ``transport.abort()``, so the kernel sends RST and frees the buffers at once (a polite ``close()`` of a
transport with unsent data keeps the socket, and its buffers, until the data is sent). The abort is counted and
logged once.

ASGI has no "abort" message. The transport is found through uvicorn: the ``receive`` callable Starlette hands the
WebSocket is the protocol's bound method, and the protocol holds the transport. When that is not found (another
server), the session still ends at the deadline; only the socket is left to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

logger = logging.getLogger(__name__)

_NO_LINGER = struct.pack("ii", 1, 0)


class ClientGone(Exception):
    """The client closed or dropped the connection."""


class ClientStalled(Exception):
    """The client accepted nothing within the deadline; the connection was aborted."""


def transport_of(ws: WebSocket) -> asyncio.Transport | None:
    """The server's transport under ``ws``, when the server is uvicorn (see the module doc); else None."""
    protocol = getattr(getattr(ws, "_receive", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


def abort_transport(transport: asyncio.Transport) -> None:
    """Reset the connection now: RST instead of FIN, and no wait for unsent data."""
    sock: Any = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
    transport.abort()


class ClientLink:
    def __init__(
        self, ws: WebSocket, deadline_s: float, *, on_abort: Callable[[str], None] | None = None
    ) -> None:
        self.ws = ws
        self.deadline_s = deadline_s
        self._on_abort = on_abort
        self.aborted = False

    async def send(self, text: str) -> None:
        """Send one text frame. Raises ClientStalled (connection aborted) or ClientGone."""
        try:
            async with asyncio.timeout(self.deadline_s):
                await self.ws.send_text(text)
        except TimeoutError:
            self.abort("client_too_slow")
            raise ClientStalled from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientGone from None

    async def close(self, code: int, reason: str) -> None:
        """Close politely when the close frame can be written within the deadline; else abort. Never raises."""
        if self.aborted:
            return
        try:
            async with asyncio.timeout(self.deadline_s):
                await self.ws.close(code, reason)
        except TimeoutError:
            self.abort("close_not_accepted")
        except (RuntimeError, OSError):  # already closed by the client or the server
            pass

    def abort(self, reason: str) -> None:
        """Reset the connection (once): the client accepted nothing for ``deadline_s``."""
        if self.aborted:
            return
        self.aborted = True
        transport = transport_of(self.ws)
        if transport is not None:
            abort_transport(transport)
        logger.warning(
            "client accepted nothing for %.1f s; connection %s (%s)",
            self.deadline_s,
            "reset" if transport is not None else "left to the server",
            reason,
        )
        if self._on_abort is not None:
            self._on_abort(reason)
