"""A scripted Realtime upstream on loopback (websockets server) for the relay's in-process tests.

Script: ``session.created`` on connect; ``session.updated`` per ``session.update``, with the whole session so far
(updates merged); the first append after a commit -> ``speech_started``; ``input_audio_buffer.commit`` -> a
transcription delta, ``speech_stopped``, ``committed`` and a transcript ("what are the opening hours"); items ->
``conversation.item.added``; deletes -> ``conversation.item.deleted``; retrieves -> ``conversation.item.retrieved``
(or an ``item_not_found`` error); ``response.create`` -> an answer shaped as GA servers send it (created, output
item, content part, ``n_deltas`` audio and transcript deltas ``delta_gap_s`` apart, the done events); with tools in
the session and a user turn last, the answer is a call of the first tool (``function_call`` item and its
arguments events) instead; after a ``function_call_output`` the answer's words are that output.
``response.cancel`` with nothing running -> ``response_cancel_not_active``; truncate ->
``conversation.item.truncated``. ``GET /healthz`` answers 200.
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
        state: dict[str, Any] = {"n": 0, "speaking": False, "response": None, "session": {"type": "realtime"}}
        state["last"] = None  # the last input item: a user message or a function_call_output
        state["answers"] = []

        async def send(type_: str, **fields: Any) -> None:
            state["n"] += 1
            await ws.send(json.dumps({"type": type_, "event_id": f"event_f{state['n']}", **fields}))

        async def respond(rid: str, params: dict[str, Any]) -> None:
            meta = params.get("metadata")
            await send("response.created", response=_response(rid, "in_progress", [], meta))
            last, tools = state["last"], state["session"].get("tools") or []
            try:
                if tools and last is not None and last.get("type") == "message":
                    output = await _call_tool(send, rid, tools[0]["name"])
                else:
                    words = last.get("output") if last is not None and "output" in last else None
                    output = await self._speak(send, rid, words)
                state["answers"].append(output)  # retrievable; ``conversations`` keeps what it was given
                status = "completed"
            except asyncio.CancelledError:
                status, output = "cancelled", None
            except ConnectionClosed:
                return
            with contextlib.suppress(ConnectionClosed):
                await send("response.done", response=_response(rid, status, [output] if output else [], meta))
            state["response"] = None

        try:
            await self._serve(ws, send, respond, events, conversation, state)
        except ConnectionClosed:
            pass
        finally:
            self.open.discard(ws)

    async def _speak(self, send: Any, rid: str, words: str | None) -> dict[str, Any]:
        """An audio answer as GA servers send it; returns its item."""
        item_id = f"item_a{rid}"
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        await send("response.output_item.added", response_id=rid, output_index=0, item=item)
        await send("conversation.item.added", item=item)
        part = {"type": "audio", "transcript": ""}
        await send("response.content_part.added", **where, part=part)
        said = []
        for i in range(self.n_deltas):
            if self.delta_gap_s:
                await asyncio.sleep(self.delta_gap_s)
            word = f"{words} " if words is not None and i == 0 else f"w{i} "
            said.append(word)
            await send("response.output_audio.delta", **where, delta=DELTA)
            await send("response.output_audio_transcript.delta", **where, delta=word)
        transcript = "".join(said)
        await send("response.output_audio.done", **where)
        await send("response.output_audio_transcript.done", **where, transcript=transcript)
        part = {"type": "audio", "transcript": transcript}
        await send("response.content_part.done", **where, part=part)
        item = {
            **item,
            "status": "completed",
            "content": [{"type": "output_audio", "transcript": transcript}],
        }
        await send("response.output_item.done", response_id=rid, output_index=0, item=item)
        await send("conversation.item.done", item=item)
        return item

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
                    _merge(state["session"], ev.get("session") or {})
                    await send("session.updated", session={**state["session"], "id": "sess_fake"})
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
                        usage={"type": "duration", "seconds": 0.9},
                    )
                    state["last"] = {"type": "message", "role": "user"}
                elif kind == "conversation.item.create":
                    item = {**ev["item"], "id": ev["item"].get("id") or f"item_c{state['n']}"}
                    conversation.append(item)
                    if item.get("role") == "user" or item.get("type") == "function_call_output":
                        state["last"] = item
                    await send("conversation.item.added", previous_item_id=None, item=item)
                elif kind == "conversation.item.retrieve":
                    found = [i for i in conversation + state["answers"] if i.get("id") == ev["item_id"]]
                    if found:
                        await send("conversation.item.retrieved", item=found[0])
                    else:
                        err = {
                            "type": "invalid_request_error",
                            "code": "item_not_found",
                            "message": "no such item",
                        }
                        await send("error", error={**err, "event_id": ev.get("event_id")})
                elif kind == "response.create":
                    params = ev.get("response") or {}
                    state["response"] = tg.create_task(respond(f"resp_{state['n']}", params))
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
                        "conversation.item.truncated",
                        item_id=ev["item_id"],
                        content_index=ev.get("content_index", 0),
                        audio_end_ms=ev["audio_end_ms"],
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


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _response(rid: str, status: str, output: list[Any], metadata: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "realtime.response",
        "status": status,
        "output": output,
        "metadata": metadata,
    }


async def _call_tool(send: Any, rid: str, name: str) -> dict[str, Any]:
    """A function call as GA servers stream it; returns its item."""
    args = '{"city": "Paris"}'
    item = {"id": f"item_fc{rid}", "type": "function_call", "call_id": f"call_{rid}", "name": name}
    where = {"response_id": rid, "item_id": item["id"], "output_index": 0, "call_id": item["call_id"]}
    await send("response.output_item.added", response_id=rid, output_index=0, item={**item, "arguments": ""})
    await send("conversation.item.added", item={**item, "arguments": ""})  # Pipecat tracks calls from this
    await send("response.function_call_arguments.delta", **where, delta=args[:9])
    await send("response.function_call_arguments.delta", **where, delta=args[9:])
    await send("response.function_call_arguments.done", **where, name=name, arguments=args)
    done = {**item, "arguments": args, "status": "completed"}
    await send("response.output_item.done", response_id=rid, output_index=0, item=done)
    await send("conversation.item.done", item=done)
    return done
