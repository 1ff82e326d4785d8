"""``parley up``: the all-in-one CPU demo.

Starts, in order: the knowledge base (the sample documents go in on first start), llama.cpp's OpenAI-compatible
server with the packaged model (child process), Parley's local voice server (child process, so model work never
stalls the relay's event loop), then the relay in this process on the requested port, with the local provider,
in-memory limits and the ticket endpoint on. Ctrl-C or SIGTERM stops the relay gracefully, then the children.

``--language fr`` (or ``de``; else ``PARLEY_LANGUAGE``) is the local voice server's default language; for French or
German the knowledge base uses the multilingual embedder (``e5-multilingual``, unless ``PARLEY_EMBEDDER`` is set),
in its own directory, with the French and German sample documents beside the English ones.

Once started, each child is supervised (``parley.supervise``): one that dies is logged (how it ended, the
last lines of its log) and started again on the same port, with backoff, until it dies too often
(``PARLEY_SUPERVISE_*``); then it stays down and ``/readyz`` says 503. Children stopped by the shutdown are not
restarted (supervision ends first).

The relay's address is checked before any child starts, so a port in use costs no model loading; every child gets
a clean environment (``procs.child_env``), never this process's whole one. A failed start raises
``procs.StartFailed``, which the CLI prints as one line.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from parley.llama_server import LlamaServer
from parley.procs import ChildProcess, StartFailed, check_port_free, free_port, parley_child_env
from parley.settings import Settings
from parley.supervise import Supervisor, restart_policy

if TYPE_CHECKING:
    from parley.rag.retriever import Retriever

logger = logging.getLogger(__name__)


MULTILINGUAL_EMBEDDER = "e5-multilingual"


def for_language(settings: Settings, language: str | None) -> Settings:
    """``parley up --language``: the local voice server's default language (else ``PARLEY_LANGUAGE``). For a
    language other than English the knowledge base uses the multilingual embedder, unless ``PARLEY_EMBEDDER``
    names one; its store has its own directory (``Settings.kb_path``), so it never meets MiniLM's vectors.
    Raises ``UnsupportedLanguage`` naming the supported languages."""
    from parley.local.languages import check_language

    update: dict[str, object] = {"language": check_language(language or settings.language)}
    if update["language"] != "en" and "embedder" not in settings.model_fields_set:
        update["embedder"] = MULTILINGUAL_EMBEDDER
    return settings.model_copy(update=update)


def local_server_process(settings: Settings, port: int, *, llm_base_url: str) -> ChildProcess:
    env = parley_child_env(
        {"PARLEY_LLM_BASE_URL": llm_base_url, "PARLEY_LANGUAGE": settings.language, "HF_HUB_OFFLINE": "1"}
    )
    argv = [sys.executable, "-m", "parley.cli", "local-server", "--host", "127.0.0.1", "--port", str(port)]
    return ChildProcess(
        "local-voice-server", argv, env=env, ready_url=f"http://127.0.0.1:{port}/healthz", ready_timeout_s=300
    )


async def _knowledge_base(settings: Settings) -> Retriever:
    """The relay's retriever; on first start the sample documents go into the default knowledge base, so the
    demo's first question is answered from them."""
    from parley.local.languages import SUPPORTED
    from parley.rag.embedder import EmbedderMismatchError
    from parley.rag.ingest import ensure_samples
    from parley.rag.retriever import open_retriever

    retriever = await open_retriever(settings)
    languages = SUPPORTED if settings.embedder == MULTILINGUAL_EMBEDDER else ("en",)
    try:
        added = await ensure_samples(
            retriever.store, retriever.embedder, settings.kb_default, languages=languages
        )
        await retriever.retrieve("warm up", session_id="parley-up", kb=settings.kb_default)  # same embedder?
    except EmbedderMismatchError as exc:
        await retriever.aclose()
        raise StartFailed(f"{exc} (PARLEY_KB_DIR={settings.kb_path()})") from None
    if added:
        logger.info("knowledge base %r was empty: ingested the sample documents", settings.kb_default)
    return retriever


def _tls_update(settings: Settings, host: str, port: int, *, self_signed: bool) -> dict[str, object]:
    """The relay's TLS settings: the operator's certificate, or (``--tls`` without one) this machine's
    self-signed one, made on first start; logs how a phone reaches and trusts it. Raises StartFailed early."""
    from parley.tls import TLSConfigError, ensure_self_signed, machine_names, server_files, trust_hint

    try:
        given = server_files(settings)
    except TLSConfigError as exc:
        raise StartFailed(str(exc)) from None
    if given is not None or not self_signed:
        return {}
    names = machine_names()
    files = ensure_self_signed(Path(settings.tls_path()), names)
    logger.info("%s", trust_hint(files, names, port))
    if host in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s only: a phone needs --host 0.0.0.0 (make demo TLS=1 does that)", host)
    return {"tls_cert_file": str(files.cert), "tls_key_file": str(files.key)}


async def run_up(
    settings: Settings,
    host: str,
    port: int,
    *,
    local_port: int = 0,
    tls: bool = False,
    language: str | None = None,
) -> int:
    from parley.local.languages import UnsupportedLanguage
    from parley.relay.app import serve_relay

    try:
        settings = for_language(settings, language)
    except UnsupportedLanguage as exc:
        raise StartFailed(str(exc)) from None
    check_port_free(host, port)
    tls_update = _tls_update(settings, host, port, self_signed=tls)
    if local_port:
        check_port_free("127.0.0.1", local_port)
    logger.info("default language %s; knowledge base embedder %s", settings.language, settings.embedder)
    local_port = local_port or free_port()
    # Until the relay takes the signals over, SIGTERM cancels this task (parley.aio), so the exit stack still
    # stops the children that have started.
    async with contextlib.AsyncExitStack() as stack:
        context = None
        if settings.rag_enabled:  # first: a knowledge base that cannot be used costs no model loading
            context = await _knowledge_base(settings)
            stack.push_async_callback(context.aclose)
        llama = await stack.enter_async_context(LlamaServer(settings))
        await stack.enter_async_context(Supervisor(llama.child, restart_policy(settings)))
        local = local_server_process(settings, local_port, llm_base_url=llama.base_url)
        await stack.enter_async_context(local)
        await stack.enter_async_context(Supervisor(local, restart_policy(settings)))
        update: dict[str, object] = {
            "local_realtime_url": f"ws://127.0.0.1:{local_port}/v1/realtime",
            "enable_ticket_endpoint": True,
            "demo_user": settings.demo_user or "demo",
            "redis_url": "",  # the demo is one process: in-memory limits and tickets
            **tls_update,
        }
        if not settings.jwt_secret.get_secret_value():
            from pydantic import SecretStr

            update["jwt_secret"] = SecretStr(secrets.token_urlsafe(32))
            logger.warning("PARLEY_JWT_SECRET is not set: using a random secret for this demo run only")
        relay_settings = settings.model_copy(update=update)
        scheme = "https" if relay_settings.tls_cert_file else "http"
        logger.info("Parley is up: open %s://%s:%d/", scheme, host, port)
        # SIGTERM/SIGINT end serve_relay (after the relay's drain); the exit stack then stops the children.
        await serve_relay(relay_settings, host, port, context=context, reraise_signals=False)
        logger.info("relay stopped; stopping the local voice server and the LLM server")
    return 0
