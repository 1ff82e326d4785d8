"""Streaming chat completions from any OpenAI-compatible server (vLLM, llama.cpp's server, ...).

``OpenAIChatLLM.stream`` POSTs ``{llm_base_url}/chat/completions`` with ``stream=true`` (and the request's tools)
and yields what the server-sent events carry: text deltas (``str``), tool-call pieces (``ToolCallDelta``) and, last,
``LLMEnd`` with the finish reason and the token usage the server reports (``stream_options.include_usage``: vLLM
sends it; llama-cpp-python's server does not, and its counts are then None). Every failure (refused connection, timeout, HTTP error status, broken or malformed
stream) becomes ``LLMUnavailable`` with a message a user can read. Nothing is retried here: the next call simply
tries again, so the local server recovers by itself once the LLM server is back.

Stopping the consumer (``aclose()`` on the generator, or cancelling the task iterating it) closes the HTTP response
at once, which tells the server to stop generating. Consumers that may stop early should iterate inside
``contextlib.aclosing`` so the close happens immediately rather than at garbage collection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from parley.errors import LLMUnavailable
from parley.local.engines import NO_TOOLS, LLMChunk, LLMEnd, Message, ToolCallDelta, Tooling
from parley.settings import Settings

logger = logging.getLogger(__name__)

_ERROR_BODY_CHARS = 300


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the OS error sits a few links down the chain (httpcore, anyio)
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        if isinstance(seen, BaseExceptionGroup):
            return any(_caused_by(inner, kind) for inner in seen.exceptions)
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        if "refused" in text or _caused_by(exc, ConnectionRefusedError):
            return "connection refused"
        if "name" in text and ("resolve" in text or "known" in text):
            return "host name not found"
        return f"cannot connect: {exc}" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.ReadTimeout):
        return "no data within the read timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed in the middle of the answer"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class OpenAIChatLLM:
    """``ChatLLM`` over one shared ``httpx.AsyncClient`` (connection pooling across sessions)."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self.base_url = settings.llm_base_url.rstrip("/")
        self.model = settings.llm_model
        timeout = httpx.Timeout(settings.llm_timeout_s, connect=settings.llm_connect_timeout_s)
        headers = {"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    def _fail(self, what: str) -> LLMUnavailable:
        """The error for the client says what went wrong, not where: the server's address stays in the log."""
        logger.warning("LLM server at %s %s", self.base_url, what)
        return LLMUnavailable(f"the language model server {what}")

    def _unavailable(self, exc: httpx.HTTPError) -> LLMUnavailable:
        state = "is unreachable" if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) else "failed"
        return self._fail(f"{state} ({_describe(exc)})")

    async def stream(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tooling: Tooling = NO_TOOLS,
    ) -> AsyncIterator[LLMChunk]:
        s = self._settings
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens if max_tokens is not None else s.llm_max_tokens,
            "temperature": temperature if temperature is not None else s.llm_temperature,
        }
        if tooling.tools:
            body["tools"] = list(tooling.tools)
            body["tool_choice"] = tooling.tool_choice
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread()).decode("utf-8", "replace")[:_ERROR_BODY_CHARS].strip()
                    raise self._fail(f"answered HTTP {resp.status_code}" + (f": {detail}" if detail else ""))
                async for chunk in self._parse(resp):
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

    async def _parse(self, resp: httpx.Response) -> AsyncIterator[LLMChunk]:
        finish: str | None = None
        done = False
        usage: dict[str, Any] | None = None
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping"), "event:" lines
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                event = json.loads(data)
            except json.JSONDecodeError as exc:
                raise self._fail(f"sent a malformed stream: {data[:80]!r}") from exc
            if not isinstance(event, dict):
                raise self._fail(f"sent a malformed stream: {data[:80]!r}")
            if "error" in event:
                err = event["error"]
                message = err.get("message", err) if isinstance(err, dict) else err
                raise self._fail(f"failed: {message}")
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]  # the last chunk with include_usage (its choices are empty)
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield delta["content"]
                for call in delta.get("tool_calls") or []:
                    yield _tool_call_delta(call)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        if finish is None and not done:
            raise self._fail("ended the stream before the answer was complete")
        yield _end(finish, usage)

    async def aclose(self) -> None:
        await self._client.aclose()


def _tool_call_delta(call: dict[str, Any]) -> ToolCallDelta:
    fn = call.get("function") or {}
    index = call.get("index")
    return ToolCallDelta(
        index=index if isinstance(index, int) else 0,
        call_id=call.get("id") or None,
        name=fn.get("name") or None,
        arguments=fn.get("arguments") or "",
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _end(finish: str | None, usage: dict[str, Any] | None) -> LLMEnd:
    if usage is None:
        return LLMEnd(finish)
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return LLMEnd(
        finish, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _count(cached)
    )
