"""The Node ``openai`` SDK (from the npm registry; `tests/e2e/node/`) as a Realtime client of Parley over ``wss://``.

Its ``OpenAIRealtimeWS`` only connects over ``wss://``: the relay serves TLS with a self-signed certificate the Node
process trusts through ``NODE_EXTRA_CA_CERTS``. One layer against the relay with a scripted upstream, one against a
real ``parley up --tls`` (LLM server, local voice server, relay).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parley.procs import ChildProcess, free_port
from parley.tls import TLSFiles, ensure_self_signed

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "realtime_turn.mjs"

sys.path.insert(0, str(Path(__file__).parents[1] / "relay"))
from relay_fakes import FakeUpstream, fake_upstream  # noqa: E402
from relay_harness import relay_settings, running_relay, token  # noqa: E402


def _need_node() -> str:
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node not found (scripts/system-deps.sh installs nodejs)"
    elif not (NODE_DIR / "node_modules" / "openai").is_dir():
        missing = f"the Node openai SDK is not installed: npm ci --prefix {NODE_DIR} (make setup does it)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    assert node is not None
    return node


async def node_turn(
    base_url: str, jwt: str, cert: Path, question: str, timeout_s: float = 90
) -> dict[str, Any]:
    """Run the Node client for one typed turn; its one JSON line."""
    node = _need_node()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "NODE_EXTRA_CA_CERTS": str(cert),
        "PARLEY_BASE_URL": base_url,
        "PARLEY_TOKEN": jwt,
        "PARLEY_TURN_TIMEOUT_MS": str(int(timeout_s * 1000)),
    }
    proc = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), question, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout_s + 30):
        out, err = await proc.communicate()
    lines = out.decode().strip().splitlines()
    assert lines, f"no output from the Node client (exit {proc.returncode}): {err.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit"] = proc.returncode
    return result


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as up:
        yield up


async def test_node_sdk_completes_a_typed_turn_over_wss(upstream: FakeUpstream, tls: TLSFiles) -> None:
    _need_node()
    settings = relay_settings(upstream.url, tls_cert_file=str(tls.cert), tls_key_file=str(tls.key))
    async with running_relay(settings) as relay:
        result = await node_turn(f"https://localhost:{relay.port}/v1", token("node-user"), tls.cert, "hello")
    assert result["exit"] == 0 and result["status"] == "completed", result
    assert "response.output_audio.delta" in result["types"], result
    assert result["types"].count("response.created") == 1, (
        result
    )  # its response.create folded into the relay's


@pytest.mark.models
async def test_node_sdk_talks_to_parley_up_with_tls(tmp_path: Path) -> None:
    _need_node()
    port = free_port()
    tls = ensure_self_signed(tmp_path / "tls")  # what `parley up --tls` makes on first start; it reuses it
    secret = "node-test-secret-" + "x" * 32
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PARLEY_LOG_JSON": "false",
        "PARLEY_TLS_DIR": str(tls.cert.parent),
        "PARLEY_JWT_SECRET": secret,
        "PARLEY_LLAMA_MODEL_PATH": "smollm2-135m",
        "PARLEY_KB_DIR": str(tmp_path / "kb"),
    }
    argv = [sys.executable, "-m", "parley.cli", "up", "--tls", "--host", "127.0.0.1", "--port", str(port)]
    up = ChildProcess(
        "parley-up-tls",
        argv,
        env=env,
        ready_url=f"https://localhost:{port}/readyz",
        ready_verify=ssl.create_default_context(cafile=str(tls.cert)),
        ready_timeout_s=300,
        log_path=tmp_path / "up.log",
    )
    from pydantic import SecretStr

    from parley.relay.auth import mint_token
    from parley.settings import Settings

    jwt = mint_token(Settings(jwt_secret=SecretStr(secret)), "node-user", ttl_s=300)
    async with up:
        result = await node_turn(f"https://localhost:{port}/v1", jwt, tls.cert, "Say hello in five words.")
    assert result["exit"] == 0 and result["status"] == "completed", (result, up.tail(30))
    assert result["transcript"].strip(), result
    assert "response.output_audio.delta" in result["types"], result
    assert "SHA-256 fingerprint" in up.tail(200)
