"""Real GA clients through a real relay (uvicorn, loopback sockets) to the scripted upstream: the stock ``openai``
SDK, the OpenAI Agents SDK (``RealtimeRunner`` with a function tool), and a walk over every GA client event type.
Every server event a client gets is checked against the SDK's pydantic models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ga_conformance import CLIENT_TYPES, check_client_event, check_server_event
from openai import AsyncOpenAI
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import GA_PATH, Relay, relay_settings, running_relay, token
from websockets.asyncio.client import ClientConnection

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
USER_TEXT = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "weather in Paris?"}],
}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as fake:
        yield fake


@pytest.fixture
async def relay(upstream: FakeUpstream) -> AsyncIterator[Relay]:
    async with running_relay(relay_settings(upstream.url)) as r:
        yield r


async def _recv_sdk(
    conn: Any, until: str, seen: list[dict[str, Any]], within_s: float = 5.0
) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        while True:
            event = json.loads(await conn.recv_bytes())
            seen.append(event)
            if event["type"] == until:
                return event


async def test_the_openai_sdk_updates_its_session_and_sees_only_ga_events(relay: Relay) -> None:
    client = AsyncOpenAI(base_url=f"{relay.http}/v1", api_key=token("sdk-ga"))
    seen: list[dict[str, Any]] = []
    async with client.realtime.connect(model="parley-local") as conn:
        created = await _recv_sdk(conn, "session.created", seen)
        assert seen == [created]  # the very first frame
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer like a pirate.",
                "audio": {"output": {"voice": "ash"}, "input": {"turn_detection": {"type": "semantic_vad"}}},
                "tools": [WEATHER_TOOL],  # type: ignore[list-item]
            }
        )
        updated = await _recv_sdk(conn, "session.updated", seen)
        session = updated["session"]
        assert session["audio"]["output"]["voice"] == "ash"
        assert session["instructions"] == "Answer like a pirate."  # its own, not the operator's
        assert session["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        assert session["audio"]["input"]["turn_detection"]["create_response"] is True  # the relay answers
        assert [t["name"] for t in session["tools"]] == ["get_weather"]
        await conn.session.update(session={"type": "realtime", "tools": []})
        await _recv_sdk(conn, "session.updated", seen)
        await conn.conversation.item.create(item=USER_TEXT)  # type: ignore[arg-type]
        await conn.response.create()
        await _recv_sdk(conn, "response.done", seen)
    assert not [e for e in seen if e["type"].startswith("parley.")]
    assert not [e for e in seen if e["type"] == "error"]
    for event in seen:
        check_server_event(event)


async def test_the_openai_sdk_gets_parley_events_when_it_asks(relay: Relay) -> None:
    client = AsyncOpenAI(base_url=f"{relay.http}/v1", api_key=token("sdk-asks"))
    seen: list[dict[str, Any]] = []
    async with client.realtime.connect(model="parley-local", extra_query={"parley_events": "true"}) as conn:
        await _recv_sdk(conn, "parley.session", seen)
    assert [e["type"] for e in seen] == ["session.created", "parley.session"]


async def test_a_browser_asks_for_parley_events_with_a_subprotocol(relay: Relay) -> None:
    ws = await relay.connect(token("browser"), path=GA_PATH, subprotocols=["realtime", "parley-events"])
    assert ws.subprotocol == "realtime"
    first, second = json.loads(await ws.recv()), json.loads(await ws.recv())
    assert (first["type"], second["type"]) == ("session.created", "parley.session")
    await ws.close()


async def test_the_agents_sdk_runs_a_typed_turn_with_a_function_tool(
    relay: Relay, upstream: FakeUpstream
) -> None:
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    agent = RealtimeAgent(name="helper", instructions="Use the tool.", tools=[get_weather])
    runner = RealtimeRunner(agent)
    model_config: Any = {
        "url": f"ws://127.0.0.1:{relay.port}/v1/realtime?model=parley-local",
        "headers": {"Authorization": f"Bearer {token('agents-sdk')}"},
        "initial_model_settings": {"turn_detection": {"type": "server_vad"}},
    }
    kinds: list[str] = []
    errors: list[Any] = []
    async with asyncio.timeout(15), await runner.run(model_config=model_config) as session:
        await session.send_message("What is the weather in Paris?")
        answered = False
        async for event in session:
            kinds.append(event.type)
            if event.type == "error":
                errors.append(event.error)
            if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                raw = event.data.data
                check_server_event(raw)
                output = raw.get("response", {}).get("output", []) if raw["type"] == "response.done" else []
                said = [c.get("transcript", "") for i in output for c in i.get("content", [])]
                answered = answered or any("sunny in Paris" in s for s in said)
            if answered and "tool_end" in kinds:
                break
    assert not errors, errors
    assert calls == ["Paris"]
    assert kinds.index("tool_start") < kinds.index("tool_end")
    sent = upstream.types()
    assert "function_call_output" in [e.get("item", {}).get("type") for e in upstream.received[-1]]
    assert sent.count("response.create") == 2  # the relay's for the typed turn, the SDK's after the tool


# --- every GA client event type --------------------------------------------------------------------------------


async def _until(ws: ClientConnection, type_: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            event = json.loads(await ws.recv())
            seen.append(event)
            if event["type"] == type_:
                return event


async def test_every_ga_client_event_is_served_or_refused_clearly(
    relay: Relay, upstream: FakeUpstream
) -> None:
    ws = await relay.connect(token("walker"), path=GA_PATH)
    seen: list[dict[str, Any]] = []
    await _until(ws, "session.created", seen)
    walked: set[str] = set()

    async def send(event: dict[str, Any], answer: str) -> dict[str, Any]:
        walked.add(check_client_event(event)["type"])
        await ws.send(json.dumps(event))
        return await _until(ws, answer, seen)

    session = {"type": "realtime", "audio": {"output": {"voice": "ash"}}}
    assert (await send({"type": "session.update", "session": session}, "session.updated"))["session"]
    await send(
        {"type": "input_audio_buffer.append", "audio": "AAAA" * 100}, "input_audio_buffer.speech_started"
    )
    await ws.send(
        json.dumps(check_client_event({"type": "input_audio_buffer.clear"}))
    )  # forwarded, unanswered
    walked.add("input_audio_buffer.clear")
    await send({"type": "input_audio_buffer.commit"}, "response.done")  # a spoken turn, answered by the relay
    # a typed item and its response.create, back to back as clients send them: the relay answers the item after
    # its knowledge lookup, with the client's response.create folded into its own, metadata and all
    await ws.send(json.dumps(check_client_event({"type": "conversation.item.create", "item": USER_TEXT})))
    walked.add("conversation.item.create")
    done = await send({"type": "response.create", "response": {"metadata": {"k": "v"}}}, "response.done")
    assert done["response"]["metadata"] == {"k": "v"}
    (added,) = [e for e in seen if e["type"] == "conversation.item.added" and e["item"].get("role") == "user"]
    item_id = added["item"]["id"]
    assert (await send({"type": "response.create"}, "response.done"))["response"]["status"] == "completed"
    got = await send(
        {"type": "conversation.item.retrieve", "item_id": item_id}, "conversation.item.retrieved"
    )
    assert got["item"]["id"] == item_id
    truncate = {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 0,
    }
    await send(truncate, "conversation.item.truncated")
    await send({"type": "conversation.item.delete", "item_id": item_id}, "conversation.item.deleted")
    await ws.send(
        json.dumps(check_client_event({"type": "response.cancel"}))
    )  # nothing running: no complaint
    walked.add("response.cancel")
    refusals = [
        ({"type": "output_audio_buffer.clear", "event_id": "r1"}, "event_not_allowed"),  # WebRTC only
        (
            {"type": "conversation.item.delete", "item_id": "parley_ctx_1", "event_id": "r2"},
            "item_not_allowed",
        ),
        ({"type": "response.create", "response": {"input": []}, "event_id": "r3"}, "event_not_allowed"),
    ]
    for event, code in refusals:
        err = await send(event, "error")
        assert (err["error"]["code"], err["error"]["event_id"]) == (code, event["event_id"])
        assert err["error"]["message"]
    assert walked == CLIENT_TYPES
    assert "response.cancel" in upstream.types() and "input_audio_buffer.clear" in upstream.types()
    await ws.close()
    for event in seen:
        check_server_event(event)
