"""The one upstream interface, and its one implementation: a Realtime WebSocket, parameterized per provider.

Both providers speak the same protocol, so a provider is a URL, credentials and a couple of facts
(``ProviderConfig``); this is the only module that knows them. Keys stay here: nothing from ``ProviderConfig``
ever reaches the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from parley.errors import InvalidRequest, UpstreamUnavailable
from parley.relay.pool import split_urls
from parley.relay.wire import UpstreamSessionConfig
from parley.settings import Settings

logger = logging.getLogger(__name__)

PROVIDERS = ("local", "openai")
CLOSE_TIMEOUT_S = 1.0  # the closing handshake with a provider; past it the connection is dropped


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold the API key: never logged
    self_interrupts: bool = True  # honours interrupt_response=true (cancels its own answer on speech_started)
    session: UpstreamSessionConfig = field(default_factory=lambda: UpstreamSessionConfig(instructions=""))
    connect_timeout_s: float = 5.0
    urls: tuple[
        str, ...
    ] = ()  # the provider's pool (``url`` is the member to connect to); empty: just ``url``


def _with_model(url: str, model: str, **extra: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("model", model)
    for key, value in extra.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def provider_for(settings: Settings, *, provider: str | None, model: str | None) -> str:
    """The provider a client asked for: ``?provider=`` wins, else the model name's mapping, else local."""
    if provider:
        if provider not in PROVIDERS:
            raise InvalidRequest(f"unknown provider {provider!r} (use one of {', '.join(PROVIDERS)})")
        return provider
    if model and any(model.startswith(p) for p in settings.openai_model_prefixes):
        return "openai"
    return "local"


def provider_config(settings: Settings, provider: str) -> ProviderConfig:
    timeout = settings.upstream_connect_timeout_s
    if provider == "openai":
        key = settings.openai_api_key.get_secret_value()
        return ProviderConfig(
            name="openai",
            url=_with_model(settings.openai_realtime_url, settings.openai_model),
            headers={"Authorization": f"Bearer {key}"} if key else {},
            session=UpstreamSessionConfig(settings.relay_instructions, voice=settings.relay_voice),
            connect_timeout_s=timeout,
        )
    if provider == "local":
        local_key = settings.local_api_key.get_secret_value()
        # Parley's local voice server sends its own events (parley.pause_transcript, parley.timing) only to clients
        # that ask; the relay reads them (speculative retrieval) and passes them on only to clients that asked.
        urls = tuple(
            _with_model(u, settings.local_model, parley_events="true") for u in local_upstream_urls(settings)
        )
        return ProviderConfig(
            name="local",
            url=urls[0] if urls else "",
            urls=urls,
            headers={"Authorization": f"Bearer {local_key}"} if local_key else {},
            session=UpstreamSessionConfig(settings.relay_instructions, voice=settings.relay_local_voice),
            connect_timeout_s=timeout,
        )
    raise InvalidRequest(f"unknown provider {provider!r}")


def local_upstream_urls(settings: Settings) -> list[str]:
    """The local voice servers: ``PARLEY_LOCAL_REALTIME_URL`` is one URL or several separated by commas."""
    return split_urls(settings.local_realtime_url)


def health_url(realtime_url: str) -> str:
    """``ws://host:port/v1/realtime`` -> ``http://host:port/healthz``."""
    parts = urlsplit(realtime_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/healthz", "", ""))


class Upstream(Protocol):
    """A Realtime session with a provider: text frames both ways."""

    async def connect(self) -> None: ...

    async def send(self, data: str) -> None: ...

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def close(self) -> None: ...


class WebSocketUpstream:
    def __init__(self, cfg: ProviderConfig, *, max_size: int | None = 16 * 1024 * 1024) -> None:
        self.cfg = cfg
        self._max_size = max_size
        self._ws: ClientConnection | None = None

    async def connect(self) -> None:
        """Open the socket; any failure (refused, timeout, HTTP error, bad handshake) is UpstreamUnavailable."""
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_s):
                self._ws = await connect(
                    self.cfg.url,
                    additional_headers=dict(self.cfg.headers),
                    max_size=self._max_size,
                    compression=None,
                    open_timeout=None,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=CLOSE_TIMEOUT_S,
                    user_agent_header="parley-relay",
                )
        except TimeoutError:
            raise UpstreamUnavailable(
                f"the {self.cfg.name} voice provider did not answer within {self.cfg.connect_timeout_s:g} s"
            ) from None
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            raise UpstreamUnavailable(
                f"the {self.cfg.name} voice provider refused the session (HTTP {status})"
            ) from None
        except (OSError, websockets.WebSocketException) as exc:
            logger.warning("upstream %s unreachable: %s", self.cfg.name, type(exc).__name__)
            raise UpstreamUnavailable(f"the {self.cfg.name} voice provider is unreachable") from None

    @property
    def _conn(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("upstream not connected")
        return self._ws

    async def send(self, data: str) -> None:
        await self._conn.send(data)

    async def __aiter__(self) -> AsyncIterator[str]:
        """Text frames until the provider closes; a normal close ends the iteration, an abnormal one raises."""
        try:
            async for message in self._conn:
                yield message if isinstance(message, str) else message.decode("utf-8", "replace")
        except websockets.ConnectionClosedError as exc:
            raise UpstreamUnavailable(f"the {self.cfg.name} voice provider dropped the connection") from exc

    async def close(self) -> None:
        """Close within ``CLOSE_TIMEOUT_S`` (a provider stuck writing to us cannot answer the close), else drop."""
        if self._ws is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S * 2):
                await self._ws.close()
        except TimeoutError:
            self._ws.transport.abort()
