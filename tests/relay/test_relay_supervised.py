"""The relay's ``/readyz`` tells the truth about supervised children (issue 8, items 9 and 10): a SIGKILLed local
voice server, or the LLM server behind it, makes it 503 naming that dependency; once the supervisor has restarted
the child on the same port it is 200 again, and a session started afterwards works without the relay being told
anything. The restart waits on a gate (``supervision_gate``), so the 503 is seen without any timing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from relay_fakes import fake_upstream
from relay_harness import (
    events_until_done,
    local_voice_server,
    recv_until,
    relay_settings,
    running_relay,
    token,
)

from parley.procs import ChildProcess, free_port
from parley.restart_policy import RestartPolicy
from parley.settings import Settings
from parley.supervise import Supervisor
from supervision_gate import Gate

POLICY = RestartPolicy(base_s=0.5, max_s=4.0, max_restarts=5, window_s=300.0)


async def readyz_until(url: str, status: int) -> dict[str, Any]:
    """Poll the relay's /readyz until it answers ``status``; its body."""
    async with asyncio.timeout(60), httpx.AsyncClient(timeout=10) as client:
        while True:
            response = await client.get(f"{url}/readyz")
            if response.status_code == status:
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.05)


async def kill_and_gate(supervisor: Supervisor, gate: Gate) -> int:
    """SIGKILL the supervised child; return its pid once the supervisor waits at the gate to restart it."""
    pid = supervisor.child.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(30):
        await gate.asked.wait()
    return pid


async def reopen(supervisor: Supervisor, gate: Gate, dead: int) -> None:
    gate.open()
    async with asyncio.timeout(120):
        await supervisor.wait_until(lambda s: s.state == "running")
    assert supervisor.child.pid not in (None, dead)


async def test_a_killed_local_voice_server_is_not_ready_then_back(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "parley.bench.fast_upstream", "--port", str(port)]
    stand_in = ChildProcess(
        "local-voice-server",
        argv,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout_s=60,
        log_path=tmp_path / "local.log",
    )
    gate = Gate()
    async with (
        stand_in,
        Supervisor(stand_in, POLICY, sleep=gate.sleep) as supervisor,
        running_relay(relay_settings(f"ws://127.0.0.1:{port}/v1/realtime")) as relay,
    ):
        assert (await readyz_until(relay.http, 200))["checks"]["local_voice_server"] == "ok"
        dead = await kill_and_gate(supervisor, gate)
        down = await readyz_until(relay.http, 503)
        assert down["not_ready"] == ["local_voice_server"], down
        assert down["checks"]["local_voice_server"].startswith("unreachable"), down
        await reopen(supervisor, gate, dead)
        assert (await readyz_until(relay.http, 200))["checks"]["local_voice_server"] == "ok"
        ws = await relay.connect(token("after-restart"))
        await recv_until(ws, "session.created")
        await ws.close()


@pytest.mark.models
async def test_a_killed_llm_server_is_not_ready_then_back_and_answers_again(
    tmp_path: Path, stt_engine: Any, tts_engine: Any, vad_factory: Any
) -> None:
    pytest.importorskip("llama_cpp")
    from parley.llama_server import LlamaServer

    settings = Settings(
        llama_port=0, llm_model="smollm2", llama_model_path="smollm2-135m", llm_health_cache_s=0.2
    )
    gate = Gate()
    async with LlamaServer(settings, log_path=tmp_path / "llama.log") as llama:
        local_settings = settings.model_copy(update={"llm_base_url": llama.base_url})
        async with (
            Supervisor(llama.child, POLICY, sleep=gate.sleep) as supervisor,
            local_voice_server(local_settings, stt_engine, tts_engine, vad_factory) as local_url,
            running_relay(relay_settings(local_url)) as relay,
        ):
            up = await readyz_until(relay.http, 200)
            assert up["checks"]["llm"] == "ok" and up["checks"]["local_voice_server"] == "ok", up
            dead = await kill_and_gate(supervisor, gate)
            down = await readyz_until(relay.http, 503)
            assert down["not_ready"] == ["llm"] and down["checks"]["llm"].startswith("unreachable"), down
            assert llama.base_url not in json.dumps(down)
            local_readyz = local_url.replace("ws://", "http://").replace("/v1/realtime", "/readyz")
            async with httpx.AsyncClient() as client:
                assert (await client.get(local_readyz)).status_code == 503
            await reopen(supervisor, gate, dead)
            assert (await readyz_until(relay.http, 200))["checks"]["llm"] == "ok"
            events = await typed_turn(relay.http, "Say hello.")
    assert events[-1]["response"]["status"] == "completed", events[-1]
    assert any(e["type"] == "response.output_audio_transcript.delta" for e in events)


async def typed_turn(relay_http: str, text: str) -> list[dict[str, Any]]:
    client = AsyncOpenAI(base_url=f"{relay_http}/v1", api_key=token("after-llm-restart"))
    async with client.realtime.connect(model="parley-local") as conn:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
        await conn.response.create()
        return await events_until_done(conn, within_s=120)


async def test_a_pool_is_ready_while_one_local_voice_server_answers_and_names_each() -> None:
    dead = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    async with fake_upstream() as live:
        async with running_relay(relay_settings(f"{dead},{live.url}")) as relay:
            up = await readyz_until(relay.http, 200)
        assert up["checks"]["local_voice_server"] == "ok", up
        members = up["local_voice_servers"]
        assert members[live.url] == {"local_voice_server": "ok"}
        assert members[dead]["local_voice_server"].startswith("unreachable"), members
    async with running_relay(relay_settings(f"{dead},{live.url}")) as relay:
        down = await readyz_until(relay.http, 503)  # the fake is gone too: none answers
    assert down["not_ready"] == ["local_voice_server"] and len(down["local_voice_servers"]) == 2, down
