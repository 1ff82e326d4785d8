"""The relay on a real loopback socket (uvicorn, in-process) in front of a scripted fake upstream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openai import AsyncOpenAI
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import (
    AUDIENCE,
    ISSUER,
    ORIGIN,
    SECRET,
    Relay,
    recv_until,
    relay_settings,
    running_relay,
    token,
)

from parley.relay.context import Context, Passage


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
async def relay(upstream: FakeUpstream) -> AsyncIterator[Relay]:
    async with running_relay(relay_settings(upstream.url)) as r:
        yield r


APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 4800).decode()})


async def refused(relay: Relay, tok: str | None, **kw: Any) -> websockets.InvalidStatus:
    with pytest.raises(websockets.InvalidStatus) as info:
        await relay.connect(tok, **kw)
    return info.value


def body(exc: websockets.InvalidStatus) -> dict[str, Any]:
    return json.loads(exc.response.body or b"{}")["error"]  # type: ignore[no-any-return]


# --- auth: refused before accept, and no upstream opened ---------------------------------------------------------


def _rsa_pem() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


ATTACKS = {
    "expired": lambda: token(exp=int(time.time()) - 120, iat=int(time.time()) - 600),
    "nbf_in_future": lambda: token(nbf=int(time.time()) + 600),
    "bad_signature": lambda: token(key="another-secret-" + "y" * 40),
    "alg_none": lambda: token(key=None, algorithm="none"),
    "rs256_when_hs256_configured": lambda: token(key=_rsa_pem()[0], algorithm="RS256"),
    "wrong_audience": lambda: token(aud="someone-else"),
    "wrong_issuer": lambda: token(iss="https://evil.example"),
    "missing_sub": lambda: token(user=None),  # type: ignore[arg-type]
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_bad_tokens_are_refused_with_401_before_accept(
    relay: Relay, upstream: FakeUpstream, attack: str
) -> None:
    before = upstream.connections
    exc = await refused(relay, ATTACKS[attack]())
    assert exc.response.status_code == 401
    assert body(exc)["type"] == "invalid_request_error"
    assert upstream.connections == before


async def test_missing_credentials_bad_origin_and_forbidden_provider(
    relay: Relay, upstream: FakeUpstream
) -> None:
    before = upstream.connections
    assert (await refused(relay, None)).response.status_code == 401
    exc = await refused(relay, token(), origin="https://evil.example")
    assert exc.response.status_code == 403 and body(exc)["code"] == "origin_not_allowed"
    exc = await refused(relay, token(parley_providers=["local"]), path="/ws/voice?provider=openai")
    assert exc.response.status_code == 403
    exc = await refused(relay, token(), path="/ws/voice?provider=nope")
    assert exc.response.status_code == 400
    assert upstream.connections == before


async def test_hs256_signed_with_the_public_key_is_refused_by_an_rs256_relay(upstream: FakeUpstream) -> None:
    private, public = _rsa_pem()
    settings = relay_settings(upstream.url, jwt_algorithms=["RS256"], jwt_public_key=public.decode())
    async with running_relay(settings) as rs_relay:
        ok = await rs_relay.connect(token(key=private, algorithm="RS256"))
        await recv_until(ok, "parley.session")
        await ok.close()
        before = upstream.connections
        # the classic key confusion: HS256 "signed" with the server's public key as the HMAC secret
        exc = await refused(rs_relay, _hs256_by_hand(public))
        assert exc.response.status_code == 401
        assert upstream.connections == before


def _hs256_by_hand(secret: bytes) -> str:
    """pyjwt refuses PEM material as an HMAC key, so forge the token the way an attacker would."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"sub": "mallory", "iat": now, "exp": now + 300, "aud": AUDIENCE, "iss": ISSUER}
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


async def test_ticket_flow_with_subprotocols_and_replay(relay: Relay, upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=relay.http) as client:
        assert (await client.post("/v1/voice/ticket")).status_code == 401
        r = await client.post(
            "/v1/voice/ticket", headers={"Authorization": f"Bearer {token('tina')}", "Origin": ORIGIN}
        )
    assert r.status_code == 200, r.text
    ticket, ttl = r.json()["ticket"], r.json()["expires_in"]
    assert 0 < ttl <= 60
    protocols = ["realtime", f"parley-ticket.{ticket}"]
    ws = await relay.connect(None, subprotocols=protocols, origin=ORIGIN)
    assert ws.subprotocol == "realtime"
    info, _ = await recv_until(ws, "parley.session")
    assert info["status"] == "active" and info["provider"] == "local"
    await ws.close()
    before = upstream.connections
    exc = await refused(relay, None, subprotocols=protocols, origin=ORIGIN)
    assert exc.response.status_code == 401 and body(exc)["code"] == "invalid_ticket"
    assert upstream.connections == before


async def test_concurrency_cap_gives_429_with_retry_after(relay: Relay, upstream: FakeUpstream) -> None:
    first, second = await relay.connect(token("carol")), await relay.connect(token("carol"))
    await recv_until(first, "parley.session")
    info, _ = await recv_until(second, "parley.session")
    assert info["quota"]["active_sessions"] == 2 and info["limits"]["max_concurrent_sessions"] == 2
    before = upstream.connections
    exc = await refused(relay, token("carol"))
    assert exc.response.status_code == 429
    assert int(exc.response.headers["Retry-After"]) >= 1
    assert body(exc)["code"] == "too_many_sessions"
    assert upstream.connections == before
    await first.close()
    await asyncio.sleep(0.2)  # the lease is released when the session ends
    third = await relay.connect(token("carol"))
    await recv_until(third, "parley.session")
    await second.close()
    await third.close()


# --- the session over the socket ---------------------------------------------------------------------------------


class _Store:
    async def retrieve(self, query: str, *, session_id: str, kb: str) -> Context:
        return Context([Passage("We open at 9 and close at 17.", "hours.md", 0.9)])

    async def ready(self) -> bool:
        return True


async def test_spoken_turn_injects_context_and_reports_timings(upstream: FakeUpstream) -> None:
    async with running_relay(relay_settings(upstream.url), context=_Store()) as r:
        ws = await r.connect(token("dave"))
        await recv_until(ws, "session.created")
        await ws.send(APPEND)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ctx, _ = await recv_until(ws, "parley.context")
        assert [s["source"] for s in ctx["sources"]] == ["hours.md"]
        turn, seen = await recv_until(ws, "parley.turn")
        assert "response.output_audio.delta" in seen and "response.done" in seen
        assert all(turn["timings_ms"][k] is not None for k in ("transcript", "retrieval", "first_audio"))
        await ws.close()
        types = upstream.types()
        assert types[0] == "session.update"
        system = [e for e in upstream.received[-1] if e["type"] == "conversation.item.create"]
        assert (
            system
            and system[0]["item"]["role"] == "system"
            and "9" in system[0]["item"]["content"][0]["text"]
        )
        assert types.index("conversation.item.create") < types.index("response.create")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{r.http}/metrics")).text
        assert 'parley_turns_total{provider="local"} 1.0' in metrics
        assert 'parley_turn_latency_seconds_count{provider="local",stage="first_audio"} 1.0' in metrics


async def test_event_outside_the_allowlist_gets_an_error_and_the_session_lives(
    relay: Relay, upstream: FakeUpstream
) -> None:
    ws = await relay.connect(token("erin"))
    await recv_until(ws, "session.created")
    await ws.send(json.dumps({"type": "transcription_session.update", "event_id": "evt_x", "session": {}}))
    err, _ = await recv_until(ws, "error")
    assert err["error"]["code"] == "event_not_allowed" and err["error"]["event_id"] == "evt_x"
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 300_000}))
    err, _ = await recv_until(ws, "error")
    assert err["error"]["code"] == "frame_too_large"
    await ws.send(APPEND)
    await recv_until(ws, "input_audio_buffer.speech_started")  # still relaying
    assert "transcription_session.update" not in upstream.types()
    await ws.close()


async def test_openai_provider_by_model_name_sends_the_key_upstream_only(
    relay: Relay, upstream: FakeUpstream
) -> None:
    ws = await relay.connect(token("frank"), path="/v1/realtime?model=gpt-realtime&parley_events=true")
    info, _ = await recv_until(ws, "parley.session")
    assert info["provider"] == "openai" and "sk-test" not in json.dumps(info)
    assert upstream.headers[-1]["Authorization"] == "Bearer sk-test-upstream-key"
    assert "model=gpt-realtime" in upstream.paths[-1]
    await ws.close()


async def test_stock_openai_sdk_talks_through_the_relay(relay: Relay) -> None:
    client = AsyncOpenAI(base_url=f"{relay.http}/v1", api_key=token("sdk-user"))
    async with client.realtime.connect(model="parley-local") as conn:
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}
        )
        await conn.response.create()
        kinds = []
        async with asyncio.timeout(5):
            async for event in conn:
                kinds.append(event.type)
                if event.type == "response.done":
                    break
        assert "response.output_audio.delta" in kinds
        assert kinds.count("response.created") == 1  # the SDK's response.create folded into the relay's turn


async def test_unreachable_upstream_is_refused_before_accept(upstream: FakeUpstream) -> None:
    settings = relay_settings("ws://127.0.0.1:9/v1/realtime", upstream_connect_timeout_s=1.0)
    async with running_relay(settings) as r:
        exc = await refused(r, token("gina"))  # HTTP 503, no 101 (test_admission: no quota spent)
        assert exc.response.status_code == 503 and int(exc.response.headers["Retry-After"]) >= 1
        assert body(exc)["code"] == "upstream_unavailable" and "local" in body(exc)["message"]
        async with httpx.AsyncClient() as client:
            ready = (await client.get(f"{r.http}/readyz")).json()
        assert ready["status"] == "not_ready" and ready["not_ready"] == ["local_voice_server"]


# --- limits and shutdown -----------------------------------------------------------------------------------------


async def test_idle_timeout_closes_with_a_reason(upstream: FakeUpstream) -> None:
    async with running_relay(relay_settings(upstream.url, idle_timeout_s=1)) as r:
        ws = await r.connect(token("hank"))
        closed, _ = await recv_until(ws, "parley.session")  # active
        closed, _ = await recv_until(ws, "parley.session", within_s=3)
        assert closed["status"] == "closed" and closed["reason"] == "idle_timeout"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1000, "idle_timeout")


async def test_duration_limit_warns_then_closes(upstream: FakeUpstream) -> None:
    settings = relay_settings(upstream.url, session_max_duration_s=2, expiry_warning_s=1.0, idle_timeout_s=30)
    async with running_relay(settings) as r:
        ws = await r.connect(token("ivy"))
        active, _ = await recv_until(ws, "parley.session")
        assert active["expires_at"] > time.time()
        warning, _ = await recv_until(ws, "parley.session", within_s=3)
        assert warning["status"] == "expiring" and warning["expires_in_s"] <= 1.0
        closed, _ = await recv_until(ws, "parley.session", within_s=3)
        assert closed["reason"] == "session_duration_limit"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1008, "session_duration_limit")


async def test_shutdown_drains_open_sessions(upstream: FakeUpstream) -> None:
    async with (
        fake_upstream(n_deltas=6, delta_gap_s=0.1) as slow,
        running_relay(relay_settings(slow.url)) as r,
    ):
        talking, idle = await r.connect(token("jack")), await r.connect(token("kim"))
        await recv_until(talking, "parley.session")  # active
        await recv_until(idle, "parley.session")
        await talking.send(APPEND)
        await talking.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await recv_until(talking, "response.created")
        r.server.should_exit = True  # what uvicorn's SIGTERM handler does
        closing, _ = await recv_until(idle, "parley.session")
        assert closing["status"] == "closing" and closing["reason"] == "server_shutdown"
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await idle.recv()
        assert idle.close_code == 1001
        # the answer in flight finishes before its socket closes
        _, seen = await recv_until(talking, "response.done", within_s=5)
        assert "parley.session" in seen
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await talking.recv()
        assert talking.close_code == 1001


async def test_healthz_readyz_and_metrics(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.http) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"limiter": "ok", "context": "ok", "local_voice_server": "ok"}
        text = (await client.get("/metrics")).text
    for name in (
        "parley_sessions_active",
        "parley_sessions_total",
        "parley_auth_rejections_total",
        "parley_limit_rejections_total",
        "parley_errors_total",
    ):
        assert name in text
    assert 'parley_limit_rejections_total{reason="too_many_sessions"}' in text
    assert 'parley_errors_total{code="event_not_allowed"}' in text


async def test_sigterm_to_parley_serve_drains_open_sessions(tmp_path: Any) -> None:
    """A real process and a real SIGTERM: clients hear why, the answer in flight finishes, then 1001."""
    import os
    import signal
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with fake_upstream(n_deltas=8, delta_gap_s=0.1) as slow:
        env = {
            **os.environ,
            "PARLEY_JWT_SECRET": SECRET,
            "PARLEY_JWT_AUDIENCE": AUDIENCE,
            "PARLEY_JWT_ISSUER": ISSUER,
            "PARLEY_LOCAL_REALTIME_URL": slow.url,
            "PARLEY_SHUTDOWN_GRACE_S": "5",
            "PARLEY_REDIS_URL": "",
        }
        log = (tmp_path / "relay.log").open("wb")
        argv = ["-m", "parley.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        try:
            async with httpx.AsyncClient() as client, asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            url = f"ws://127.0.0.1:{port}/ws/voice?parley_events=true"
            talking = await websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {token('t1')}"}
            )
            await recv_until(talking, "parley.session")  # active
            await talking.send(APPEND)
            await talking.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await recv_until(talking, "response.created")
            proc.send_signal(signal.SIGTERM)
            closing, _ = await recv_until(talking, "parley.session")
            assert (closing["status"], closing["reason"]) == ("closing", "server_shutdown")
            done, _ = await recv_until(talking, "response.done", within_s=5)
            assert done["response"]["status"] == "completed"
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await talking.recv()
            assert talking.close_code == 1001
            # uvicorn re-raises the captured SIGTERM after its clean shutdown, so the exit is "killed by SIGTERM"
            assert await asyncio.wait_for(proc.wait(), 15) in (0, -signal.SIGTERM)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            log.close()
