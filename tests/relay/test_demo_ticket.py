"""The demo login (``POST /v1/demo/ticket``): mounted only with ``demo_user``; the ticket opens a session for that
user, who stays held to the per-user limits and to the local provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import ORIGIN, Relay, recv_until, relay_settings, running_relay


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as fake:
        yield fake


async def demo_ticket(relay: Relay, origin: str = ORIGIN) -> httpx.Response:
    async with httpx.AsyncClient(base_url=relay.http) as client:
        return await client.post("/v1/demo/ticket", headers={"Origin": origin})


def denial_code(exc: websockets.InvalidStatus) -> tuple[int, Any]:
    return exc.response.status_code, json.loads(exc.response.body or b"{}")["error"]["code"]


async def test_demo_ticket_is_off_by_default(upstream: FakeUpstream) -> None:
    async with running_relay(relay_settings(upstream.url)) as relay:
        assert (await demo_ticket(relay)).status_code in (404, 405)


async def test_demo_ticket_opens_a_limited_local_session(upstream: FakeUpstream) -> None:
    settings = relay_settings(upstream.url, demo_user="demo-t", max_concurrent_sessions=1)
    async with running_relay(settings) as relay:
        assert (await demo_ticket(relay, origin="https://evil.example")).status_code == 403
        r = await demo_ticket(relay)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        payload = r.json()
        assert payload["user"] == "demo-t" and payload["providers"] == ["local"]
        assert 0 < payload["expires_in"] <= 60
        protocols = ["realtime", f"parley-ticket.{payload['ticket']}"]
        ws = await relay.connect(None, subprotocols=protocols, origin=ORIGIN)
        assert ws.subprotocol == "realtime"
        info, _ = await recv_until(ws, "parley.session")
        assert info["status"] == "active" and info["limits"]["max_concurrent_sessions"] == 1

        # single use
        with pytest.raises(websockets.InvalidStatus) as replay:
            await relay.connect(None, subprotocols=protocols, origin=ORIGIN)
        assert denial_code(replay.value) == (401, "invalid_ticket")
        # the demo user's limits hold: one session at a time
        second = ["realtime", f"parley-ticket.{(await demo_ticket(relay)).json()['ticket']}"]
        with pytest.raises(websockets.InvalidStatus) as busy:
            await relay.connect(None, subprotocols=second, origin=ORIGIN)
        assert denial_code(busy.value) == (429, "too_many_sessions")
        await ws.close()
        # and the cloud provider is not the demo user's to spend
        third = ["realtime", f"parley-ticket.{(await demo_ticket(relay)).json()['ticket']}"]
        with pytest.raises(websockets.InvalidStatus) as cloud:
            await relay.connect(None, path="/ws/voice?provider=openai", subprotocols=third, origin=ORIGIN)
        assert denial_code(cloud.value) == (403, "provider_not_allowed")
