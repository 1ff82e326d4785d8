"""Children get a clean environment (issue 8, item 13): ``make demo PORT=18080`` exports ``PORT``, and llama.cpp's
server reads ``PORT``/``HOST``/``MODEL``/``N_CTX``... from its environment, so nothing arbitrary may be inherited."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from parley.procs import ChildProcess, child_env, free_port, parley_child_env
from parley.settings import Settings
from parley.up import local_server_process

# Variables llama.cpp's server reads as settings (pydantic-settings, no prefix, case-insensitive).
LEAKY = {
    "PORT": "1",
    "HOST": "bogus",
    "MODEL": "/nope.gguf",
    "N_CTX": "5",
    "port": "2",
    "HF_MODEL_REPO_ID": "x/y",
}


@pytest.fixture
def leaky_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LEAKY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PARLEY_SOME_SETTING", "kept")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")


def _assert_clean(env: dict[str, str] | None) -> None:
    assert env is not None, "the child would inherit the whole environment"
    assert not set(LEAKY) & set(env), sorted(set(LEAKY) & set(env))
    assert env.get("PATH") and env.get("LC_ALL") == "C.UTF-8" and env.get("PYTHONPATH") == "/somewhere"


def test_child_env_keeps_what_a_process_needs_only(leaky_environ: None) -> None:
    env = child_env({"EXTRA": "1"})
    _assert_clean(env)
    assert env["EXTRA"] == "1"
    assert "PARLEY_SOME_SETTING" not in env and "OPENAI_API_KEY" not in env
    parley = parley_child_env()
    _assert_clean(parley)
    assert parley["PARLEY_SOME_SETTING"] == "kept" and parley["OPENAI_API_KEY"] == "sk-test"


def test_llama_server_child_gets_no_port_or_host_from_the_environment(
    leaky_environ: None, tmp_path: Path
) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama.cpp's server is not installed")
    from parley.llama_server import LlamaServer

    model = tmp_path / "m.gguf"
    model.write_bytes(b"never loaded")
    server = LlamaServer(Settings(llama_model_path=str(model), llama_port=0))
    child = server._child
    _assert_clean(child.env)
    assert child.env is not None and not any(k.startswith("PARLEY_") for k in child.env)
    argv = child.argv
    assert argv[argv.index("--port") + 1] == str(server.port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--model") + 1] == str(model)


def test_local_voice_server_child_gets_parley_settings_only(leaky_environ: None) -> None:
    child = local_server_process(Settings(), 1234, llm_base_url="http://127.0.0.1:9/v1")
    _assert_clean(child.env)
    assert child.env is not None
    assert child.env["PARLEY_LLM_BASE_URL"] == "http://127.0.0.1:9/v1"
    assert child.env["PARLEY_SOME_SETTING"] == "kept"
    assert child.env["HF_HUB_OFFLINE"] == "1"


DUMP_AND_SERVE = """
import http.server, json, os, sys
with open(sys.argv[2], "w") as f:
    json.dump(dict(os.environ), f)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


async def test_a_started_child_does_not_see_the_parents_port(leaky_environ: None, tmp_path: Path) -> None:
    port = free_port()
    dump = tmp_path / "env.json"
    argv = [sys.executable, "-c", DUMP_AND_SERVE, str(port), str(dump)]
    async with ChildProcess(
        "env-dump",
        argv,
        ready_url=f"http://127.0.0.1:{port}/",
        ready_timeout_s=30,
        log_path=tmp_path / "c.log",
    ):
        seen = json.loads(dump.read_text())
    _assert_clean(seen)
