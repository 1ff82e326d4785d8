"""The relay over TLS: HTTPS and WSS with a certificate from the settings, and a clear refusal of a bad pair."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import relay_settings, running_relay, token

from parley.procs import child_env
from parley.tls import TLSFiles, ensure_self_signed


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as up:
        yield up


async def test_the_stock_sdk_completes_a_turn_over_wss(upstream: FakeUpstream, tls: TLSFiles) -> None:
    settings = relay_settings(upstream.url, tls_cert_file=str(tls.cert), tls_key_file=str(tls.key))
    trust = ssl.create_default_context(cafile=str(tls.cert))
    async with running_relay(settings) as relay:
        base = f"https://localhost:{relay.port}"
        async with httpx.AsyncClient(verify=trust) as http:
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port is not served
            async with httpx.AsyncClient() as plain:
                await plain.get(f"http://localhost:{relay.port}/healthz")
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key=token("tls-user"))
        async with client.realtime.connect(
            model="parley-local", websocket_connection_options={"ssl": trust}
        ) as conn:
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
            await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
            await conn.response.create()
            kinds = []
            async with asyncio.timeout(10):
                async for event in conn:
                    kinds.append(event.type)
                    if event.type == "response.done":
                        break
        assert "response.output_audio.delta" in kinds


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "parley.cli", "serve", "--port", "1"]
    return subprocess.run(
        argv, env=child_env(env, prefixes=("PARLEY_",)), capture_output=True, text=True, timeout=60
    )


def test_a_certificate_without_its_key_is_refused_in_one_line(tls: TLSFiles, tmp_path: Path) -> None:
    other = ensure_self_signed(tmp_path / "other")
    for env, expected in [
        ({"PARLEY_TLS_CERT_FILE": str(tls.cert)}, "set both PARLEY_TLS_CERT_FILE and PARLEY_TLS_KEY_FILE"),
        ({"PARLEY_TLS_CERT_FILE": str(tls.cert), "PARLEY_TLS_KEY_FILE": str(other.key)}, "cannot use"),
        ({"PARLEY_TLS_CERT_FILE": "/nonexistent.pem", "PARLEY_TLS_KEY_FILE": str(tls.key)}, "does not exist"),
    ]:
        done = _serve({"PARLEY_JWT_SECRET": "x" * 40, **env})
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("parley serve: ") and expected in lines[0], done.stderr
