"""Whether the local voice server's LLM server answers: ``GET {llm_base_url}/models`` with a short time-out.

The result is reused for ``cache_s`` and concurrent checks share one request, so readiness probes (the relay's
``/readyz`` asks on each of its own probes) do not hammer the LLM server. States are ``ok``, ``HTTP <status>``
or ``unreachable (<error>)``; the server's address is not in them (they reach the relay's ``/readyz``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from parley.settings import Settings

logger = logging.getLogger(__name__)


class LLMHealth:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout_s: float = 1.0,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = base_url.rstrip("/") + "/models"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._state = ""
        self._checked_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMHealth:
        return cls(
            settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout_s=settings.llm_health_timeout_s,
            cache_s=settings.llm_health_cache_s,
        )

    def _fresh(self) -> bool:
        return bool(self._state) and self._clock() - self._checked_at < self._cache_s

    async def check(self) -> str:
        if self._fresh():
            return self._state
        async with self._lock:  # whoever waited here reuses the answer the first caller got
            if not self._fresh():
                state = await self._probe()
                if state != self._state:
                    log = logger.info if state == "ok" else logger.warning
                    log("LLM server at %s: %s", self.url, state)
                self._state, self._checked_at = state, self._clock()
            return self._state

    async def _probe(self) -> str:
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s, headers=self._headers) as client:
                response = await client.get(self.url)
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        return "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
