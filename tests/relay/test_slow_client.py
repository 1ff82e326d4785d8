"""A client that never reads, on a real relay over loopback: the relay resets it at the stall deadline.

The client is a raw socket with a small receive buffer: it completes the WebSocket handshake, sends audio and a
commit (the fake upstream then streams a long answer), and never reads again. Once the buffers on both sides are
full, every send to it waits; the relay must give up after ``client_stall_s``, reset the connection (RST, not a
close frame it can never deliver) and end the session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import pytest
from relay_fakes import fake_upstream
from relay_harness import Relay, relay_settings, running_relay, token

from parley.relay.runtime import SessionRuntime

APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 4800).decode()})
COMMIT = json.dumps({"type": "input_audio_buffer.commit"})


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def open_raw_session(relay: Relay, user: str) -> socket.socket:
    """A WebSocket handshake on a raw socket with a small receive buffer; returns once the 101 is read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", relay.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws/voice?provider=local HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{relay.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token(user)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 1)  # byte by byte: nothing after the response head is read
        assert chunk, "relay closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def only_session(relay: Relay) -> SessionRuntime:
    """The relay registers the session right after it writes the 101, in the same loop turn: once the client
    has read the 101, the session is there."""
    (runtime,) = relay.state.sessions
    return runtime


async def test_a_client_that_never_reads_is_reset_at_the_stall_deadline() -> None:
    loop = asyncio.get_running_loop()
    async with fake_upstream(n_deltas=4000) as up:  # ~26 MB of answer: more than every buffer on the way
        settings = relay_settings(up.url, client_stall_s=0.5, relay_queue_size=8, idle_timeout_s=120)
        async with running_relay(settings) as relay:
            sock = await open_raw_session(relay, "slow-reader")
            try:
                runtime = only_session(relay)
                await loop.sock_sendall(sock, masked_text_frame(APPEND) + masked_text_frame(COMMIT))
                async with asyncio.timeout(15):  # the answer takes ~1 s to fill the buffers, then 0.5 s stall
                    await runtime.finished.wait()
                assert runtime.close_reason == "client too slow"
                assert not relay.state.sessions
                aborts = relay.state.resilience.client_aborts.labels("client_too_slow")
                assert aborts._value.get() == 1
                # the connection was reset, not closed politely: what was buffered, then ECONNRESET
                with pytest.raises(ConnectionResetError):
                    async with asyncio.timeout(5):
                        while await loop.sock_recv(sock, 1 << 16):
                            pass
            finally:
                sock.close()
