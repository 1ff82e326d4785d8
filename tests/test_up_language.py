"""``parley up --language``: the assistant's default language on a fresh machine (a fresh data directory), the
multilingual knowledge base it brings for French and German, and the one-line failures of a bad language or a
knowledge base built with another embedder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from parley.procs import ChildProcess, free_port
from parley.rag.embedded import EmbeddedStore
from parley.rag.embedder import E5_NAME
from parley.rag.types import Chunk, Document


def _env(data: Path, **extra: str) -> dict[str, str]:
    """This environment without the settings the test decides, with a fresh XDG data directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PARLEY_KB_DIR", "PARLEY_EMBEDDER", "PARLEY_LANGUAGE")
    }
    return {**env, "HF_HUB_OFFLINE": "1", "PARLEY_LOG_JSON": "false", "XDG_DATA_HOME": str(data), **extra}


def _run_up(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "parley.cli",
        "up",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        *args,
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def _one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("parley up: ") and all(e in last for e in expected), result.stderr


def test_up_with_an_unsupported_language_names_the_supported_ones(tmp_path: Path) -> None:
    result = _run_up(_env(tmp_path), "--language", "es")
    _one_line_failure(result, "'es'", "en (English), fr (French), de (German)")


async def test_up_refuses_a_knowledge_base_built_with_another_embedder(tmp_path: Path) -> None:
    kb_dir = tmp_path / "kb"
    store = EmbeddedStore(kb_dir, "another-embedder", 384)
    chunk = Chunk("c1", "notes.md", "Notes", (), "Eggs hatch in 21 days.", 0)
    await store.upsert(
        "default", Document("notes.md", "Notes", "d1", (chunk,)), np.ones((1, 384), np.float32)
    )
    await store.aclose()
    result = _run_up(_env(tmp_path, PARLEY_KB_DIR=str(kb_dir)), "--language", "fr")
    _one_line_failure(result, "another-embedder", E5_NAME, str(kb_dir))


@pytest.mark.models
async def test_up_in_french_serves_a_french_voice_server_and_a_multilingual_knowledge_base(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port, local_port = free_port(), free_port()
    argv = [sys.executable, "-m", "parley.cli", "up", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--local-port", str(local_port), "--language", "fr"]
    ready = f"http://127.0.0.1:{port}/readyz"
    up = ChildProcess("parley-up", argv, env=_env(data), ready_url=ready, log_path=tmp_path / "up.log")
    async with up, httpx.AsyncClient() as client:
        assert (await client.get(ready)).status_code == 200
        health = (await client.get(f"http://127.0.0.1:{local_port}/healthz")).json()
    assert health["models"]["language"] == "fr", health
    assert "default language fr; knowledge base embedder e5-multilingual" in up.tail(400)

    parley = data / "parley"
    assert not (parley / "kb").exists()  # MiniLM's knowledge base is not touched
    store = EmbeddedStore(parley / "kb-e5-multilingual", E5_NAME, 384)
    sources = {
        Path(d.source).relative_to(Path(d.source).parents[1]).as_posix()
        for d in await store.documents("default")
    }
    await store.aclose()
    assert {"fr/poussiniere.md", "de/kuekenaufzucht.md", "samples/brooding.md"} <= sources, sources
