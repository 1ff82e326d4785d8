"""The relay app: ``create_relay_app`` (a Starlette app), ``serve_relay`` / ``run_relay`` (uvicorn).

Routes: ``WS /ws/voice`` and ``WS /v1/realtime`` (one handler), ``POST /v1/voice/ticket`` (when
``enable_ticket_endpoint``), ``POST /v1/demo/ticket`` (when ``demo_user``; see ``demo``), ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, and the demo page at ``/`` when a ``frontend_demo/`` directory exists.

Shutdown: uvicorn turns SIGTERM/SIGINT into ``should_exit``; its ``Server.shutdown`` then closes the listening
socket and kills open WebSockets (1012) *before* the lifespan shutdown runs. So ``serve_relay`` uses a
``uvicorn.Server`` subclass whose ``shutdown`` first runs ``drain`` (new sessions get 503 while it lasts, clients get
``parley.session`` closing/server_shutdown, answers in flight finish within ``shutdown_grace_s``, then 1001), and
only then uvicorn's own shutdown. The lifespan shutdown drains too, for other ASGI servers (a no-op after the
first drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from parley.logs import install_client_fault_filter
from parley.relay.auth import JWTVerifier
from parley.relay.context import ContextProvider, NoContext
from parley.relay.demo import demo_ticket_endpoint
from parley.relay.endpoint import ticket_endpoint, voice_endpoint
from parley.relay.handshake import guarded_http_protocol
from parley.relay.limits.base import Limiter
from parley.relay.ops import drain, healthz, metrics, readyz
from parley.relay.state import RelayState
from parley.relay.upstream import ProviderConfig, Upstream, WebSocketUpstream
from parley.settings import Settings
from parley.tls import server_files

logger = logging.getLogger(__name__)

__all__ = ["create_relay_app", "drain", "run_relay", "serve_relay"]


def _demo_dir() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base / "frontend_demo"
        if candidate.is_dir():
            return candidate
    return None


def create_relay_app(
    settings: Settings,
    *,
    limiter: Limiter | None = None,
    context: ContextProvider | None = None,
    upstream_factory: Callable[[ProviderConfig], Upstream] | None = None,
) -> Starlette:
    """The relay as an ASGI app. ``limiter`` defaults to ``make_limiter(settings)`` (Redis when
    ``PARLEY_REDIS_URL`` is set, else in-memory) and is closed with the app; ``context`` defaults to NoContext."""
    owns_limiter = limiter is None
    if limiter is None:
        from parley.relay.limits import make_limiter

        limiter = make_limiter(settings)
    state = RelayState(
        settings=settings,
        verifier=JWTVerifier(settings),
        limiter=limiter,
        context=context if context is not None else NoContext(),
        upstream_factory=upstream_factory or WebSocketUpstream,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await drain(state, settings.shutdown_grace_s)
        if owns_limiter:
            await state.limiter.aclose()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute("/ws/voice", voice_endpoint),
        WebSocketRoute("/v1/realtime", voice_endpoint),
    ]
    if settings.enable_ticket_endpoint:
        routes.append(Route("/v1/voice/ticket", ticket_endpoint, methods=["POST"]))
    if settings.demo_user:
        routes.append(Route("/v1/demo/ticket", demo_ticket_endpoint, methods=["POST"]))
    demo = _demo_dir()
    if demo is not None:
        routes.append(Mount("/", app=StaticFiles(directory=demo, html=True), name="demo"))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.relay = state
    return app


class RelayServer(uvicorn.Server):
    """uvicorn, with the relay's drain before uvicorn closes connections.

    uvicorn re-raises the SIGTERM/SIGINT it caught once ``serve`` is done, which kills the process on the spot.
    With ``reraise_signals=False`` (``parley up``) ``serve`` just returns, so the caller can still stop its
    child processes."""

    def __init__(
        self,
        config: uvicorn.Config,
        state: RelayState,
        *,
        reraise_signals: bool = True,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.relay_state = state
        self.reraise_signals = reraise_signals
        self.on_started = on_started  # called once the server accepts connections

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            if not self.reraise_signals:
                self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await drain(self.relay_state, self.relay_state.settings.shutdown_grace_s)
        await super().shutdown(sockets)


def relay_server(
    app: Starlette,
    host: str,
    port: int,
    *,
    reraise_signals: bool = True,
    on_started: Callable[[], None] | None = None,
    **config: object,
) -> RelayServer:
    state: RelayState = app.state.relay
    settings = state.settings
    install_client_fault_filter()  # uvicorn's ERROR lines that any client can cause become rationed INFO
    tls = server_files(settings)
    if tls is not None:  # HTTPS and WSS: phones give pages the microphone only over https
        config = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key), **config}
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws_max_size=max(settings.max_frame_bytes * 2, 1 << 20),  # the session answers frame_too_large itself
        http=guarded_http_protocol(settings),  # request heads bounded in size and time (see handshake)
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        **config,  # type: ignore[arg-type]
    )
    return RelayServer(uv_config, state, reraise_signals=reraise_signals, on_started=on_started)


async def serve_relay(
    settings: Settings,
    host: str,
    port: int,
    *,
    limiter: Limiter | None = None,
    context: ContextProvider | None = None,
    reraise_signals: bool = True,
    sock: socket.socket | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """The relay on ``host:port``, or on the listening ``sock`` given (a ``--workers`` child); ``on_started`` is
    called once it accepts connections."""
    async with contextlib.AsyncExitStack() as stack:
        if context is None and settings.rag_enabled:
            from parley.rag.retriever import open_retriever

            retriever = await open_retriever(settings)
            stack.push_async_callback(retriever.aclose)
            context = retriever
        await _serve(
            settings,
            host,
            port,
            limiter=limiter,
            context=context,
            reraise_signals=reraise_signals,
            sock=sock,
            on_started=on_started,
        )


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    limiter: Limiter | None,
    context: ContextProvider | None,
    reraise_signals: bool,
    sock: socket.socket | None,
    on_started: Callable[[], None] | None,
) -> None:
    app = create_relay_app(settings, limiter=limiter, context=context)
    server = relay_server(app, host, port, reraise_signals=reraise_signals, on_started=on_started)
    # uvicorn handles SIGTERM/SIGINT from here (drain first); drop parley.aio's cancel-on-SIGTERM, which would
    # otherwise fire too and cancel the drain.
    asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
    if sock is None:
        scheme = "https" if settings.tls_cert_file else "http"
        logger.info("relay listening on %s://%s:%d", scheme, host, port)
        await server.serve()
    else:
        await server.serve(sockets=[sock])


def run_relay(
    settings: Settings,
    host: str,
    port: int,
    *,
    limiter: Limiter | None = None,
    context: ContextProvider | None = None,
    sock: socket.socket | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """``parley serve``: run the relay until SIGTERM/SIGINT, then drain."""
    from parley import aio

    aio.run(
        serve_relay(settings, host, port, limiter=limiter, context=context, sock=sock, on_started=on_started)
    )
