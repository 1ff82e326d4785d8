"""The local voice server's check of its LLM server, over real HTTP against a stand-in LLM server that counts its
requests: a short cache (fake clock) and one request for concurrent checks, so readiness probes do not hammer it;
``/healthz`` stays 200 and names the LLM's state, ``/readyz`` is 503 while the LLM server does not answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import uvicorn
from session_fakes import fake_engines
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from parley.local.llm_health import LLMHealth
from parley.local.server import create_app
from parley.procs import free_port
from parley.settings import Settings


@dataclass
class StandInLLM:
    """``GET /v1/models`` answers ``status``; ``release`` holds each answer until set (to overlap checks)."""

    status: int = 200
    requests: int = 0
    auth: str = ""
    release: asyncio.Event | None = None

    def app(self) -> Starlette:
        async def models(request: Request) -> JSONResponse:
            self.requests += 1
            self.auth = request.headers.get("authorization", "")
            if self.release is not None:
                await self.release.wait()
            return JSONResponse({"data": [{"id": "m"}]}, status_code=self.status)

        return Starlette(routes=[Route("/v1/models", models)])


@contextlib.asynccontextmanager
async def serve(app: Starlette, port: int = 0) -> AsyncIterator[int]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:  # noqa: ASYNC110 - uvicorn only exposes a flag
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_state_is_cached_then_checked_again() -> None:
    llm, clock = StandInLLM(), Clock()
    async with serve(llm.app()) as port:
        health = LLMHealth(f"http://127.0.0.1:{port}/v1/", api_key="sk-x", cache_s=2.0, clock=clock)
        assert await health.check() == "ok" and llm.requests == 1 and llm.auth == "Bearer sk-x"
        llm.status = 500
        clock.now += 1.9
        assert await health.check() == "ok" and llm.requests == 1  # still within the cache
        clock.now += 0.1
        assert await health.check() == "HTTP 500" and llm.requests == 2


async def test_concurrent_checks_share_one_request() -> None:
    llm = StandInLLM(release=asyncio.Event())
    async with serve(llm.app()) as port:
        health = LLMHealth(f"http://127.0.0.1:{port}/v1", cache_s=2.0, clock=Clock())
        checks = [asyncio.create_task(health.check()) for _ in range(20)]
        async with asyncio.timeout(10):
            while llm.requests == 0:  # noqa: ASYNC110 - the stand-in counts, no event to await
                await asyncio.sleep(0.01)
        llm.release.set()
        assert await asyncio.gather(*checks) == ["ok"] * 20
        assert llm.requests == 1


async def test_a_dead_llm_server_is_unreachable_without_its_address() -> None:
    port = free_port()
    state = await LLMHealth(f"http://127.0.0.1:{port}/v1", timeout_s=1.0).check()
    assert state == "unreachable (ConnectError)" and str(port) not in state


async def test_local_server_healthz_names_the_llm_and_readyz_follows_it() -> None:
    llm_port = free_port()
    llm = StandInLLM()
    settings = Settings(llm_base_url=f"http://127.0.0.1:{llm_port}/v1", llm_health_cache_s=0)
    async with (
        serve(create_app(settings, fake_engines())) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["checks"] == {"llm": "unreachable (ConnectError)"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        async with serve(llm.app(), llm_port):
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready", "checks": {"llm": "ok"}}
            assert (await client.get("/healthz")).json()["checks"] == {"llm": "ok"}
