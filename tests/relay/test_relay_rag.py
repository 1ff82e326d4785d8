"""The relay's knowledge-base path over real sockets (scripted upstream): a dead or slow store, the knowledge
base picked by the token, speculative lookups, and the relay's own items kept from the client."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import recv_until, relay_settings, running_relay, token
from websockets.asyncio.client import ClientConnection

from parley.relay.context import Context, Passage

APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 4800).decode()})
COMMIT = json.dumps({"type": "input_audio_buffer.commit"})


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as fake:
        yield fake


class Store:
    """A context provider whose health the test controls: up, down (raises), or hanging."""

    def __init__(self) -> None:
        self.mode = "up"
        self.calls: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    async def retrieve(self, query: str, *, session_id: str, kb: str) -> Context:
        self.calls.append((query, kb))
        if self.mode == "down":
            raise ConnectionError("store unreachable")
        if self.mode == "hang":
            await self.release.wait()
        return Context([Passage("We open at 9 and close at 17.", "/srv/kb/hours.md", 0.8, title="Hours")])

    async def ready(self) -> bool:
        return self.mode == "up"


async def spoken_turn(ws: ClientConnection) -> list[dict[str, Any]]:
    """One spoken turn; the client's events up to and including parley.turn."""
    await ws.send(APPEND)
    await ws.send(COMMIT)
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while not events or events[-1]["type"] != "parley.turn":
            events.append(json.loads(await ws.recv()))
    return events


def of(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


async def test_a_dead_store_warns_once_answers_anyway_and_the_next_turn_works_when_it_is_back(
    upstream: FakeUpstream,
) -> None:
    store = Store()
    store.mode = "down"
    async with running_relay(relay_settings(upstream.url), context=store) as r:
        ws = await r.connect(token("erin"))
        await recv_until(ws, "session.created")
        first = await spoken_turn(ws)
        (warning,) = of(first, "parley.warning")
        assert warning["code"] == "knowledge_base_unavailable"
        assert of(first, "parley.context")[0]["status"] == "error"
        assert of(first, "response.done")[0]["response"]["status"] == "completed"
        second = await spoken_turn(ws)
        assert of(second, "parley.warning") == [] and of(second, "parley.context")[0]["status"] == "error"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{r.http}/readyz")).status_code == 503
            metrics = (await client.get(f"{r.http}/metrics")).text
        assert 'parley_context_lookups_total{status="error"}' in metrics
        store.mode = "up"
        third = await spoken_turn(ws)
        ctx = of(third, "parley.context")[0]
        assert ctx["status"] == "ok" and ctx["sources"][0]["source"] == "hours.md"
        assert ctx["sources"][0]["title"] == "Hours"
        await ws.close()


async def test_a_store_over_its_time_box_is_skipped(upstream: FakeUpstream) -> None:
    store = Store()
    store.mode = "hang"
    async with running_relay(relay_settings(upstream.url, context_timeout_ms=50), context=store) as r:
        ws = await r.connect(token("fay"))
        await recv_until(ws, "session.created")
        events = await spoken_turn(ws)
        ctx = of(events, "parley.context")[0]
        assert ctx["status"] == "timeout" and ctx["sources"] == []
        assert of(events, "response.done")[0]["response"]["status"] == "completed"
        assert "conversation.item.create" not in upstream.types()  # nothing injected for it
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{r.http}/metrics")).text
        assert 'parley_turn_context_total{speculative="false",status="timeout"} 1.0' in metrics
        store.release.set()
        await ws.close()


async def test_the_speculative_lookup_serves_the_turn_and_the_client_never_sees_the_passages(
    upstream: FakeUpstream,
) -> None:
    store = Store()
    async with running_relay(relay_settings(upstream.url), context=store) as r:
        ws = await r.connect(token("gus"))
        await recv_until(ws, "session.created")
        events = await spoken_turn(ws)
        ctx = of(events, "parley.context")[0]
        assert ctx["speculative"] is True and ctx["query"] == "what are the opening hours"
        assert len(store.calls) == 1  # the partial's lookup served the final transcript
        sent = upstream.types()
        assert sent.index("conversation.item.create") < sent.index("response.create")
        # the injected system item is not echoed to the client
        assert not [e for e in of(events, "conversation.item.added") if e["item"].get("role") == "system"]
        # a second turn with the same passages keeps the one item; the conversation never holds two
        await spoken_turn(ws)
        assert upstream.types().count("conversation.item.create") == 1
        await ws.close()


async def test_the_token_picks_the_knowledge_base(upstream: FakeUpstream) -> None:
    store = Store()
    async with running_relay(relay_settings(upstream.url), context=store) as r:
        ws = await r.connect(
            token("hal", parley_kb=["acme", "beta"]),
            path="/ws/voice?provider=local&kb=beta&parley_events=true",
        )
        await recv_until(ws, "session.created")
        await spoken_turn(ws)
        assert {kb for _, kb in store.calls} == {"beta"}
        await ws.close()
        with pytest.raises(websockets.InvalidStatus) as refused:
            await r.connect(token("hal", parley_kb=["acme"]), path="/ws/voice?provider=local&kb=beta")
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "kb_not_allowed"
