"""A scripted Realtime upstream on loopback (websockets server) for the relay's in-process tests.

Script: ``session.created`` on connect; ``session.updated`` per ``session.update``; the first append after a
commit -> ``speech_started``; ``input_audio_buffer.commit`` -> a transcription delta, ``speech_stopped``,
``committed`` and a transcript ("what are the opening hours"); user/system items -> ``conversation.item.added``; deletes -> ``conversation.item.deleted``; ``response.create`` -> created,
``n_deltas`` audio deltas ``delta_gap_s`` apart, done; ``response.cancel`` with nothing running ->
``response_cancel_not_active``; truncate -> ``conversation.item.truncated``. ``GET /healthz`` answers 200.
``drop_all()`` resets every open connection (the server "dies" mid-session), ``stop()`` also stops listening;
``conversations`` holds the items each connection was given, in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

TRANSCRIPT = "what are the opening hours"
DELTA = base64.b64encode(b"\x01\x00" * 2400).decode()  # 100 ms of PCM16 24 kHz


@dataclass
class FakeUpstream:
    port: int = 0
    n_deltas: int = 3
    delta_gap_s: float = 0.0
    connections: int = 0
    received: list[list[dict[str, Any]]] = field(default_factory=list)
    headers: list[Headers] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    conversations: list[list[dict[str, Any]]] = field(default_factory=list)
    open: set[ServerConnection] = field(default_factory=set)
    _connected: asyncio.Condition = field(default_factory=asyncio.Condition)
    server: Server | None = None

    async def wait_connections(self, n: int) -> None:
        """Until ``n`` connections have been made in all."""
        async with self._connected:
            await self._connected.wait_for(lambda: self.connections >= n)

    def drop_all(self) -> None:
        """Reset every open connection at once, as a crashed server's kernel would."""
        for conn in list(self.open):
            conn.transport.abort()

    async def stop(self) -> None:
        """Die: stop listening (later connects are refused) and reset every open connection."""
        assert self.server is not None
        self.server.close(close_connections=False)
        self.drop_all()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def types(self, conn: int = -1) -> list[str]:
        return [e.get("type", "") for e in self.received[conn]]

    def health(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.open.add(ws)
        async with self._connected:
            self._connected.notify_all()
        events: list[dict[str, Any]] = []
        self.received.append(events)
        conversation: list[dict[str, Any]] = []
        self.conversations.append(conversation)
        self.headers.append(ws.request.headers if ws.request else Headers())
        self.paths.append(ws.request.path if ws.request else "")
        state: dict[str, Any] = {"n": 0, "speaking": False, "response": None}

        async def send(type_: str, **fields: Any) -> None:
            state["n"] += 1
            await ws.send(json.dumps({"type": type_, "event_id": f"event_f{state['n']}", **fields}))

        async def respond(rid: str) -> None:
            await send("response.created", response={"id": rid, "status": "in_progress"})
            try:
                for i in range(self.n_deltas):
                    if self.delta_gap_s:
                        await asyncio.sleep(self.delta_gap_s)
                    await send("response.output_audio.delta", response_id=rid, item_id="item_a", delta=DELTA)
                    await send("response.output_audio_transcript.delta", response_id=rid, delta=f"w{i} ")
                status = "completed"
            except asyncio.CancelledError:
                status = "cancelled"
            except ConnectionClosed:
                return
            with contextlib.suppress(ConnectionClosed):
                await send("response.done", response={"id": rid, "status": status})
            state["response"] = None

        try:
            await self._serve(ws, send, respond, events, conversation, state)
        except ConnectionClosed:
            pass
        finally:
            self.open.discard(ws)

    async def _serve(
        self,
        ws: ServerConnection,
        send: Any,
        respond: Any,
        events: list[dict[str, Any]],
        conversation: list[dict[str, Any]],
        state: dict[str, Any],
    ) -> None:
        await send("session.created", session={"type": "realtime", "id": "sess_fake"})
        async with asyncio.TaskGroup() as tg:
            async for raw in ws:
                ev = json.loads(raw)
                events.append(ev)
                kind = ev.get("type")
                if kind == "session.update":
                    await send("session.updated", session=ev.get("session"))
                elif kind == "input_audio_buffer.append" and not state["speaking"]:
                    state["speaking"] = True
                    await send("input_audio_buffer.speech_started", audio_start_ms=0, item_id="item_u")
                elif kind == "input_audio_buffer.commit":
                    state["speaking"] = False
                    # the transcript of the speech so far, as a server sends it at the pause
                    await send(
                        "conversation.item.input_audio_transcription.delta",
                        item_id="item_u",
                        content_index=0,
                        delta=TRANSCRIPT,
                    )
                    await send("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id="item_u")
                    await send("input_audio_buffer.committed", item_id="item_u")
                    await send(
                        "conversation.item.input_audio_transcription.completed",
                        item_id="item_u",
                        content_index=0,
                        transcript=TRANSCRIPT,
                    )
                elif kind == "conversation.item.create":
                    item = {**ev["item"], "id": ev["item"].get("id") or f"item_c{state['n']}"}
                    conversation.append(item)
                    await send("conversation.item.added", item=item)
                elif kind == "response.create":
                    state["response"] = tg.create_task(respond(f"resp_{state['n']}"))
                elif kind == "response.cancel":
                    task = state["response"]
                    if task is None:
                        err = {
                            "type": "invalid_request_error",
                            "code": "response_cancel_not_active",
                            "message": "x",
                        }
                        await send("error", error=err)
                    else:
                        task.cancel()
                elif kind == "conversation.item.delete":
                    await send("conversation.item.deleted", item_id=ev["item_id"])
                elif kind == "conversation.item.truncate":
                    await send(
                        "conversation.item.truncated", item_id=ev["item_id"], audio_end_ms=ev["audio_end_ms"]
                    )
            if state["response"] is not None:
                state["response"].cancel()


@contextlib.asynccontextmanager
async def fake_upstream(**kw: Any) -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(**kw)
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.health) as server:
        fake.server = server
        fake.port = next(iter(server.sockets)).getsockname()[1]
        yield fake
