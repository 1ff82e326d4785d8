"""Child processes that Parley owns: started, awaited until their HTTP endpoint answers, stopped and reaped.

Used by ``parley up`` (llama.cpp server, local voice server) and by test fixtures. A child's output goes to a
log file, never to a pipe nobody reads, and the last lines of that log are quoted when the child fails to start.

A child never inherits the parent's environment wholesale: ``child_env`` passes the few variables a process needs
to run (``PATH``, ``HOME``, locale, temporary directory, ``PYTHON*``, the Hugging Face cache and offline switch) and,
for Parley's own children, the ``PARLEY_*`` settings. Anything else in the parent's environment (``PORT``, ``HOST``,
``MODEL``, ``N_CTX``, ... which ``make demo PORT=18080`` exports and llama.cpp's server reads as its settings) stays
out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

logger = logging.getLogger(__name__)


# Exact names a child may inherit. Nothing here may be a setting name of a child that reads un-prefixed variables
# (llama.cpp's server reads its pydantic settings -- host, port, model, n_ctx, hf_model_repo_id, ... -- from the
# environment, case-insensitively), hence no ``HF_*`` wildcard.
_PASS_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TMP",
        "TEMP",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "TRANSFORMERS_OFFLINE",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    }
)
_PASS_PREFIXES = ("LC_", "PYTHON")


def child_env(
    extra: Mapping[str, str] | None = None,
    *,
    prefixes: Sequence[str] = (),
    names: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A clean environment for a child: the variables it needs to run, taken from ``environ`` (default
    ``os.environ``), plus those starting with one of ``prefixes`` or named in ``names``, then ``extra`` on top."""
    source = os.environ if environ is None else environ
    wanted = _PASS_PREFIXES + tuple(prefixes)
    env = {k: v for k, v in source.items() if k in _PASS_NAMES or k in names or k.startswith(wanted)}
    env.update(extra or {})
    return env


def parley_child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``child_env`` for a Parley process: also every ``PARLEY_*`` setting and the un-prefixed names ``Settings``
    reads (``OPENAI_API_KEY``)."""
    return child_env(extra, prefixes=("PARLEY_",), names=_settings_aliases())


def _settings_aliases() -> tuple[str, ...]:
    from pydantic import AliasChoices

    from parley.settings import Settings

    names: list[str] = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.extend(c for c in choices if isinstance(c, str))
    return tuple(names)


def check_port_free(host: str, port: int) -> None:
    """Raise ``StartFailed`` (one line) unless ``host:port`` can be bound now, as the server will bind it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind(addr)
        except OSError as exc:
            reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise StartFailed(f"cannot listen on {host}:{port}: {reason}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` / ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class StartFailed(RuntimeError):
    """A start that failed for a reason the user can act on: ``message`` is one line; ``detail`` (e.g. the last
    lines of a child's output) is appended to ``str(exc)`` for callers that show everything."""

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(f"{message}; last output:\n{detail}" if detail else message)
        self.message = message
        self.detail = detail


class ChildFailed(StartFailed):
    pass


class ChildProcess:
    """``async with ChildProcess(...) as child:`` starts the command and returns once ``ready_url`` answers 200."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready_url: str,
        env: Mapping[str, str] | None = None,  # default: parley_child_env()
        ready_timeout_s: float = 120.0,
        stop_timeout_s: float = 10.0,
        log_path: str | Path | None = None,
        ready_verify: ssl.SSLContext | bool = True,  # trust for an https ready_url (self-signed)
    ) -> None:
        self.name = name
        self.ready_verify = ready_verify
        self.argv = list(argv)
        self.ready_url = ready_url
        self.env = dict(env) if env is not None else parley_child_env()
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"parley-{name}-", suffix=".log")
            os.close(fd)
            log_path = tmp
        self.log_path = Path(log_path)
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """``None`` while the child runs (or before it started); else how it ended (negative: the signal)."""
        return self._proc.returncode if self._proc else None

    async def wait(self) -> int:
        """Wait until the child (started) exits; its return code."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return await self._proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        logger.info("starting %s (log: %s)", self.name, self.log_path)
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0, verify=self.ready_verify) as client:
            while True:
                if self._proc.returncode is not None:
                    raise ChildFailed(
                        f"{self.name} {describe_exit(self._proc.returncode)} before it was ready "
                        f"(log: {self.log_path})",
                        detail=self.tail(),
                    )
                with contextlib.suppress(httpx.HTTPError):
                    resp = await client.get(self.ready_url)
                    if resp.status_code == 200:
                        logger.info("%s is ready at %s", self.name, self.ready_url)
                        return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ChildFailed(
                        f"{self.name} was not ready at {self.ready_url} within {self.ready_timeout_s:.0f} s "
                        f"(log: {self.log_path})",
                        detail=self.tail(),
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._proc.wait(), 0.2)

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        logger.info("stopping %s (pid %s)", self.name, proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout_s)
        except TimeoutError:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def __aenter__(self) -> ChildProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())
