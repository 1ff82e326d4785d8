"""LlamaServer: the llama.cpp child process starts, answers, fails readably, and is reaped."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from parley.llama_server import LlamaServer, packaged_gguf
from parley.procs import ChildFailed
from parley.settings import Settings

pytestmark = pytest.mark.models


@pytest.fixture(autouse=True)
def _needs_llama() -> None:
    pytest.importorskip("llama_cpp")


def test_packaged_gguf_is_found() -> None:
    path = packaged_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000


async def test_serves_models_under_the_alias(llama_server: LlamaServer) -> None:
    assert llama_server.base_url.startswith("http://127.0.0.1:") and llama_server.base_url.endswith("/v1")
    async with httpx.AsyncClient() as client:
        models = (await client.get(f"{llama_server.base_url}/models")).json()
    assert [m["id"] for m in models["data"]] == [llama_server.model_alias]


async def test_bad_model_fails_with_the_child_output_and_is_reaped(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    server = LlamaServer(
        Settings(llama_model_path=str(bogus)), ready_timeout_s=60, log_path=tmp_path / "llama.log"
    )
    with pytest.raises(ChildFailed, match="exited with code") as info:
        async with server:
            pass
    assert "last output" in str(info.value)
    assert server.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChildFailed, match="not found"):
        LlamaServer(Settings(llama_model_path=str(tmp_path / "nope.gguf")))


async def test_exit_stops_and_reaps_the_child(tmp_path: Path) -> None:
    async with LlamaServer(Settings(llama_port=0), log_path=tmp_path / "llama.log") as server:
        pid = server.pid
        assert pid is not None
        os.kill(pid, 0)  # running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
