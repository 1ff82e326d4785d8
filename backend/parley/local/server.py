"""The local voice server's HTTP/WebSocket surface: ``WS /v1/realtime``, ``GET /healthz`` and ``GET /readyz``.

``/healthz`` answers 200 while the server serves (``parley up`` waits for it before it counts the server as started,
so the server comes up even while its LLM server is down); its body's ``checks.llm`` says whether the LLM server
answers (``llm_health``), which the relay's ``/readyz`` reports as its ``llm`` check. ``/readyz`` is 503 while the
LLM server does not answer.

The WebSocket endpoint only pumps frames into a ``LocalConnection``. Any ``model`` query parameter is accepted;
``parley_events`` (or the subprotocol ``parley-events``) says whether the client gets Parley's own ``parley.*``
events (``wants_parley_events``). The
local server is an internal service: a Bearer key is accepted as is, unless ``PARLEY_LOCAL_API_KEY`` is set, in
which case it must match (header ``Authorization: Bearer <key>``, or for browsers the subprotocol
``openai-insecure-api-key.<key>``); a wrong key is refused with HTTP 401 before the socket is accepted.

``load_engines`` builds, loads and warms the real models (blocking: call it from a thread); ``run_local_server`` is
what ``parley local-server`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from parley.local.connection import LocalConnection
from parley.local.engines import Engines, VadParams
from parley.local.llm_health import LLMHealth
from parley.local.models import build_engines, close_engines, warmup_engines
from parley.logs import log_context
from parley.realtime.extensions import EVENTS_QUERY, wants_parley_events
from parley.settings import Settings

logger = logging.getLogger(__name__)

KEY_SUBPROTOCOL = "openai-insecure-api-key."


def describe_models(settings: Settings, engines: Engines) -> dict[str, Any]:
    return {
        "stt": getattr(engines.stt, "model_ref", type(engines.stt).__name__),
        "tts": getattr(engines.tts, "default_voice", type(engines.tts).__name__),
        "voices": list(engines.tts.voices()),
        "llm": {"base_url": settings.llm_base_url, "model": settings.llm_model},
        "vad": type(engines.vad).__name__,
        "language": settings.language,  # sessions start in it; a client changes theirs with session.update
    }


def _presented_key(ws: WebSocket) -> str | None:
    auth = ws.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for proto in ws.scope.get("subprotocols", []):
        if proto.startswith(KEY_SUBPROTOCOL):
            return str(proto[len(KEY_SUBPROTOCOL) :])
    return None


async def _deny(ws: WebSocket, status: int, message: str) -> None:
    body = {"error": {"type": "invalid_request_error", "code": "unauthorized", "message": message}}
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(body, status_code=status))
    else:
        await ws.close(code=1008, reason=message)


def create_app(settings: Settings, engines: Engines) -> Starlette:
    required = settings.local_api_key.get_secret_value()
    models = describe_models(settings, engines)

    llm_health = LLMHealth.from_settings(settings)

    async def healthz(request: Request) -> JSONResponse:
        """Liveness: 200 while this server serves; the body also says whether its LLM server answers."""
        llm = await llm_health.check()
        return JSONResponse({"status": "ok", "models": models, "checks": {"llm": llm}})

    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 503 while the LLM server does not answer (every turn would fail with llm_unavailable)."""
        llm = await llm_health.check()
        ready = llm == "ok"
        body = {"status": "ready" if ready else "not_ready", "checks": {"llm": llm}}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def realtime(ws: WebSocket) -> None:
        if required:
            key = _presented_key(ws) or ""
            if not hmac.compare_digest(key.encode(), required.encode()):
                logger.info("refused a realtime connection: wrong or missing API key")
                await _deny(ws, 401, "A valid API key is required (Authorization: Bearer <key>).")
                return
        offered = ws.scope.get("subprotocols", [])
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        parley_events = wants_parley_events(offered, ws.query_params.get(EVENTS_QUERY))  # the relay asks

        async def recv() -> str | bytes | None:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text = message.get("text")
            return text if text is not None else message.get("bytes", b"")

        session = LocalConnection(
            settings,
            engines,
            recv=recv,
            send=ws.send_text,
            model=ws.query_params.get("model") or "parley-local",
            parley_events=parley_events,
        )
        with log_context(session_id=session.protocol.session_id, user_id=None):
            logger.info("realtime session opened (model %s)", session.protocol.config.model)
            await session.run()
            logger.info("realtime session closed")
        with contextlib.suppress(Exception):
            await ws.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await close_engines(engines)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            WebSocketRoute("/v1/realtime", realtime),
        ],
        lifespan=lifespan,
    )


def load_engines(settings: Settings) -> Engines:
    """The real engines (``models.build_engines``: tiny.en/base Whisper, Piper/Pico voices, the LLM client),
    loaded and run once for English and the server's default language, so neither's first turn pays for loading.
    Blocking. The other languages load on their first session."""
    engines = build_engines(settings)
    languages = tuple(dict.fromkeys(("en", settings.language)))
    asyncio.run(warmup_engines(engines, languages))
    engines.vad(VadParams()).feed(bytes(24_000))  # 0.5 s of silence through the detector
    models = describe_models(settings, engines)
    logger.info(
        "local engines ready: stt %s, tts %s, default language %s, llm %s",
        models["stt"],
        models["tts"],
        settings.language,
        settings.llm_base_url,
    )
    return engines


def uvicorn_config(settings: Settings, engines: Engines, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        create_app(settings, engines),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=max(
            4 * settings.max_event_bytes, 1 << 20
        ),  # larger frames get an error event, not a close
        lifespan="on",
        log_config=None,
        access_log=False,
    )


def run_local_server(settings: Settings, host: str, port: int) -> None:
    """``parley local-server``: load the models, then serve until SIGINT/SIGTERM."""
    import uvicorn

    engines = load_engines(settings)
    uvicorn.Server(uvicorn_config(settings, engines, host, port)).run()
