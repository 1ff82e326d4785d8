"""Run the relay app with uvicorn on a free loopback port, in the test's event loop; tokens and clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from pydantic import SecretStr
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from parley.relay.app import RelayServer, create_relay_app, relay_server
from parley.relay.context import ContextProvider
from parley.relay.limits.base import Limiter
from parley.relay.limits.memory import MemoryLimiter
from parley.relay.state import RelayState
from parley.relay.upstream import ProviderConfig, Upstream
from parley.settings import Settings

SECRET = "test-secret-" + "x" * 40
AUDIENCE = "parley-test"
ISSUER = "https://auth.test"
ORIGIN = "https://app.example"
# Most relay tests read Parley's own events (parley.session, parley.context, ...), which a client gets only when it
# asks; the tests of the pure GA stream connect without it (GA_PATH).
EVENTS_PATH = "/ws/voice?provider=local&parley_events=true"
GA_PATH = "/ws/voice?provider=local"


def relay_settings(upstream_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "jwt_secret": SecretStr(SECRET),
        "jwt_algorithms": ["HS256"],
        "jwt_audience": AUDIENCE,
        "jwt_issuer": ISSUER,
        "local_realtime_url": upstream_url,
        "openai_realtime_url": upstream_url,
        "openai_api_key": SecretStr("sk-test-upstream-key"),
        "allowed_origins": [ORIGIN],
        "max_concurrent_sessions": 2,
        "sessions_per_hour": 1000,
        "idle_timeout_s": 30,
        "enable_ticket_endpoint": True,
        "shutdown_grace_s": 3.0,
        "log_json": False,
    }
    base.update(overrides)
    return Settings(**base)


def token(user: str = "alice", *, key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user, "iat": now, "exp": now + 300, "aud": AUDIENCE, "iss": ISSUER}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=algorithm)


@dataclass
class Relay:
    app: Starlette
    server: RelayServer
    port: int

    @property
    def state(self) -> RelayState:
        state: RelayState = self.app.state.relay
        return state

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = EVENTS_PATH) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def connect(
        self,
        tok: str | None = None,
        *,
        path: str = EVENTS_PATH,
        subprotocols: list[str] | None = None,
        origin: str | None = None,
    ) -> ClientConnection:
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return await connect(
            self.ws_url(path),
            additional_headers=headers,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            origin=origin,  # type: ignore[arg-type]
            open_timeout=5,
        )


@contextlib.asynccontextmanager
async def running_relay(
    settings: Settings,
    *,
    limiter: Limiter | None = None,
    context: ContextProvider | None = None,
    upstream_factory: Callable[[ProviderConfig], Upstream] | None = None,
) -> AsyncIterator[Relay]:
    app = create_relay_app(
        settings,
        limiter=limiter or MemoryLimiter(settings),
        context=context,
        upstream_factory=upstream_factory,
    )
    server = relay_server(app, "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Relay(app, server, port)
    finally:
        server.should_exit = True
        await task


async def recv_until(
    ws: ClientConnection, type_: str, within_s: float = 5.0
) -> tuple[dict[str, Any], list[str]]:
    """Read events until one of ``type_``; returns it and the types seen before it."""
    seen: list[str] = []
    async with asyncio.timeout(within_s):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == type_:
                return event, seen
            seen.append(event["type"])


@contextlib.asynccontextmanager
async def local_voice_server(settings: Settings, stt: Any, tts: Any, vad: Any) -> AsyncIterator[str]:
    """The real local voice server in this process on a free port (its LLM at ``settings.llm_base_url``); yields
    its ws URL. The engines belong to the caller (session fixtures), which closes them."""
    import uvicorn

    from parley.local.engines import Engines
    from parley.local.llm import OpenAIChatLLM
    from parley.local.server import create_app

    llm = OpenAIChatLLM(settings)
    engines = Engines(stt=stt, tts=tts, llm=llm, vad=vad)
    config = uvicorn.Config(
        create_app(settings, engines), host="127.0.0.1", port=0, ws="auto", lifespan="off", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"ws://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1/realtime"
    finally:
        server.should_exit = True
        await task
        await llm.aclose()


async def events_until_done(conn: Any, within_s: float) -> list[dict[str, Any]]:
    """Events from an ``openai`` SDK realtime connection up to and including ``response.done``."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(within_s):
        while True:
            event = json.loads(await conn.recv_bytes())
            events.append(event)
            if event["type"] == "response.done":
                return events
