"""Upstream failover on a real relay (uvicorn on loopback) in front of scripted upstreams.

A session's upstream is reset mid-session (``FakeUpstream.drop_all``): the session must move to another upstream
of its pool (or, when the operator allows it, from openai to local), tell the client (``parley.session`` moved),
fail the answer in flight with a clear error, replay the conversation into the new upstream, and answer the next
turn there. With nothing left it ends as before (1011, a readable error).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import websockets
from relay_fakes import TRANSCRIPT, FakeUpstream, fake_upstream
from relay_harness import Relay, recv_until, relay_settings, running_relay, token

UPSTREAM_QUERY = "?model=parley-local&parley_events=true"  # what the relay adds to a local upstream's URL

APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 4800).decode()})
COMMIT = json.dumps({"type": "input_audio_buffer.commit"})
RESPONSE_CREATE = json.dumps({"type": "response.create"})


async def spoken_turn(ws: Any) -> dict[str, Any]:
    """A spoken question answered in full; returns the relay's ``parley.turn``."""
    await ws.send(APPEND)
    await ws.send(COMMIT)
    turn, _ = await recv_until(ws, "parley.turn")
    return turn


async def test_a_dead_pool_member_moves_the_session_and_the_next_turn_is_answered_by_another() -> None:
    async with fake_upstream() as a, fake_upstream() as b:
        settings = relay_settings(f"{a.url},{b.url}")
        async with running_relay(settings) as relay:
            ws = await relay.connect(token("fo-pool"))
            active, _ = await recv_until(ws, "parley.session")
            assert active["status"] == "active"
            assert (a.connections, b.connections) == (1, 0)  # least loaded, ties in the configured order
            await spoken_turn(ws)

            a.drop_all()
            moved, seen = await recv_until(ws, "parley.session")
            assert "error" not in seen  # nothing was in flight: nothing failed
            assert moved["status"] == "moved" and moved["reason"] == "upstream_lost"
            assert moved["provider"] == moved["previous_provider"] == "local"
            assert moved["replayed_items"] == 2 and moved["gap_ms"] >= 0
            assert b.connections == 1

            await ws.send(RESPONSE_CREATE)
            done, _ = await recv_until(ws, "response.done")
            assert done["response"]["status"] == "completed"
            assert "response.create" in b.types()
            # the new upstream was configured as the first one was, then given the conversation as text
            assert b.types()[0] == "session.update"
            assert [(i["role"], i["content"][0]["text"]) for i in b.conversations[0]] == [
                ("user", TRANSCRIPT),
                ("assistant", "w0 w1 w2"),
            ]
            pool = relay.state.upstreams.pool_of("local")
            assert (pool.load(a.url + UPSTREAM_QUERY), pool.load(b.url + UPSTREAM_QUERY)) == (
                0,
                1,
            )
            metrics = relay.state.resilience
            assert metrics.failovers.labels("local", "local", "moved")._value.get() == 1
            await ws.close()


async def test_an_answer_in_flight_fails_clearly_and_the_next_turn_works() -> None:
    async with (
        fake_upstream(n_deltas=500, delta_gap_s=0.02) as a,  # 10 s of answer: still playing at the drop
        fake_upstream() as b,
        running_relay(relay_settings(f"{a.url},{b.url}")) as relay,
    ):
        ws = await relay.connect(token("fo-inflight"))
        await recv_until(ws, "parley.session")
        await ws.send(APPEND)
        await ws.send(COMMIT)
        await recv_until(ws, "response.output_audio.delta")  # the answer is playing
        a.drop_all()
        done, _ = await recv_until(ws, "response.done")
        assert done["response"]["status"] == "failed"
        assert done["response"]["status_details"]["error"]["code"] == "upstream_lost"
        err, _ = await recv_until(ws, "error")
        assert err["error"]["code"] == "upstream_lost" and "ask again" in err["error"]["message"]
        moved, _ = await recv_until(ws, "parley.session")
        assert moved["status"] == "moved"
        turn = await spoken_turn(ws)  # a whole spoken turn on the new upstream
        assert turn["status"] == "completed"
        assert b.types().count("response.create") == 1
        await ws.close()


async def test_with_no_upstream_left_the_session_ends_with_a_readable_error() -> None:
    async with (
        fake_upstream() as a,
        running_relay(relay_settings(a.url, upstream_connect_timeout_s=1.0)) as relay,
    ):
        ws = await relay.connect(token("fo-none"))
        await recv_until(ws, "parley.session")
        await a.stop()  # the only member: dead, and nothing listens any more
        err, _ = await recv_until(ws, "error")
        assert err["error"]["code"] == "upstream_unavailable" and "local" in err["error"]["message"]
        closed, _ = await recv_until(ws, "parley.session")
        assert closed["status"] == "closed" and closed["reason"] == "upstream_unavailable"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1011
        assert relay.state.resilience.failovers.labels("local", "none", "failed")._value.get() == 1


def openai_and_local(openai: FakeUpstream, local: FakeUpstream, **kw: Any) -> Any:
    return relay_settings(local.url, openai_realtime_url=openai.url, **kw)


async def openai_session(relay: Relay, user: str) -> Any:
    ws = await relay.connect(token(user), path="/ws/voice?provider=openai&parley_events=true")
    active, _ = await recv_until(ws, "parley.session")
    assert active["provider"] == "openai"
    return ws


async def test_openai_falls_back_to_local_when_the_operator_allows_it() -> None:
    async with (
        fake_upstream() as cloud,
        fake_upstream() as local,
        running_relay(openai_and_local(cloud, local, failover_to_local=True)) as relay,
    ):
        ws = await openai_session(relay, "fo-cloud")
        await spoken_turn(ws)
        await cloud.stop()
        moved, _ = await recv_until(ws, "parley.session")
        assert (moved["status"], moved["previous_provider"], moved["provider"]) == (
            "moved",
            "openai",
            "local",
        )
        turn = await spoken_turn(ws)
        assert turn["status"] == "completed" and local.connections == 1
        # the local provider's own session configuration (its voice, not the cloud's)
        update = local.received[0][0]
        assert (
            update["type"] == "session.update" and update["session"]["audio"]["output"].get("voice") is None
        )
        assert [i["role"] for i in local.conversations[0][:2]] == ["user", "assistant"]
        await ws.close()


async def test_openai_does_not_fall_back_unless_allowed() -> None:
    async with fake_upstream() as cloud, fake_upstream() as local:
        settings = openai_and_local(cloud, local, upstream_connect_timeout_s=1.0)
        async with running_relay(settings) as relay:
            ws = await openai_session(relay, "fo-cloud-only")
            await cloud.stop()
            closed, _ = await recv_until(ws, "parley.session")
            assert closed["status"] == "closed" and closed["reason"] == "upstream_unavailable"
            assert local.connections == 0
