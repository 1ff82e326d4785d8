"""OpenAIChatLLM against scripted HTTP answers (no server, no model)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from pydantic import SecretStr

from parley.errors import LLMUnavailable
from parley.local.engines import LLMEnd, ToolCallDelta, Tooling
from parley.local.llm import OpenAIChatLLM
from parley.settings import Settings

BASE = "http://llm.test/v1"
MESSAGES = [{"role": "user", "content": "hi"}]


def sse(*events: dict | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def make_llm(handler: Callable[[httpx.Request], httpx.Response], **settings: object) -> OpenAIChatLLM:
    s = Settings(llm_base_url=BASE, llm_model="m1", llm_api_key=SecretStr("k1"), **settings)  # type: ignore[arg-type]
    return OpenAIChatLLM(s, transport=httpx.MockTransport(handler))


async def collect(llm: OpenAIChatLLM, **kw: object) -> str:
    chunks = await collect_all(llm, **kw)
    assert isinstance(chunks[-1], LLMEnd)
    return "".join(c for c in chunks if isinstance(c, str))


async def collect_all(llm: OpenAIChatLLM, **kw: object) -> list[object]:
    try:
        return [d async for d in llm.stream(MESSAGES, **kw)]  # type: ignore[arg-type]
    finally:
        await llm.aclose()


async def test_streams_deltas_and_sends_the_openai_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = b": ping\n\n" + sse(delta("Hel"), delta("lo"), delta("", "stop"), "[DONE]")
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    assert await collect(make_llm(handler, llm_max_tokens=7), temperature=0.1) == "Hello"
    request = seen[0]
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == "Bearer k1"
    body = json.loads(request.content)
    assert body == {
        "model": "m1",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 7,
        "temperature": 0.1,
    }


def tool_piece(index: int, args: str, call_id: str | None = None, name: str | None = None) -> dict:
    fn = {"arguments": args, **({"name": name} if name else {})}
    call = {"index": index, "type": "function", "function": fn, **({"id": call_id} if call_id else {})}
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


async def test_tool_calls_and_usage_are_streamed_and_tools_sent() -> None:
    seen: list[dict] = []
    usage = {"prompt_tokens": 42, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 30}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        body = sse(
            tool_piece(0, "", "call_1", "get_weather"),
            tool_piece(0, '{"city": '),
            tool_piece(0, '"Paris"}', "call_1", "get_weather"),  # llama.cpp repeats id and name
            tool_piece(1, "{}", "call_2", "now"),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": usage},
            "[DONE]",
        )
        return httpx.Response(200, content=body)

    tools = ({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},)
    chunks = await collect_all(make_llm(handler), tooling=Tooling(tools, "auto"))
    assert seen[0]["tools"] == list(tools) and seen[0]["tool_choice"] == "auto"
    assert chunks == [
        ToolCallDelta(0, "call_1", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city": '),
        ToolCallDelta(0, "call_1", "get_weather", '"Paris"}'),
        ToolCallDelta(1, "call_2", "now", "{}"),
        LLMEnd("tool_calls", input_tokens=42, output_tokens=9, cached_tokens=30),
    ]


async def test_without_tools_none_are_sent_and_missing_usage_is_none() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=sse(delta("Hi", "length"), "[DONE]"))

    chunks = await collect_all(make_llm(handler))
    assert "tools" not in seen[0] and "tool_choice" not in seen[0]
    assert chunks == ["Hi", LLMEnd("length")]


@pytest.mark.parametrize(
    ("response", "pattern"),
    [
        (
            httpx.Response(404, text='{"error": "model m1 not found"}'),
            "answered HTTP 404: .*model m1 not found",
        ),
        (httpx.Response(503), "answered HTTP 503$"),
        (httpx.Response(200, content=sse(delta("a")) + b"data: {not json\n\n"), "malformed stream"),
        (httpx.Response(200, content=sse({"error": {"message": "out of memory"}})), "failed: out of memory"),
        (httpx.Response(200, content=sse(delta("a"))), "ended the stream before the answer was complete"),
    ],
)
async def test_failures_are_llm_unavailable(
    response: httpx.Response, pattern: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(LLMUnavailable, match=pattern) as info:
        await collect(make_llm(lambda _request: response))
    # the client reads what went wrong; the internal address is only in the server's log
    assert BASE not in info.value.message and "language model server" in info.value.message
    assert any(BASE in r.getMessage() for r in caplog.records)


async def test_timeouts_are_llm_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(LLMUnavailable, match="failed \\(no data within the read timeout\\)"):
        await collect(make_llm(handler))


class _EndlessStream(httpx.AsyncByteStream):
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            yield sse(delta("word "))
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        self.closed.set()


async def test_cancelling_the_consumer_closes_the_http_stream() -> None:
    stream = _EndlessStream()
    llm = make_llm(lambda _request: httpx.Response(200, stream=stream))
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.stream(MESSAGES):
            got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.wait_for(stream.closed.wait(), 1)
    await llm.aclose()


async def test_closing_the_generator_closes_the_http_stream() -> None:
    stream = _EndlessStream()
    llm = make_llm(lambda _request: httpx.Response(200, stream=stream))
    async with contextlib.aclosing(llm.stream(MESSAGES)) as deltas:
        assert await anext(deltas) == "word "
    assert stream.closed.is_set()
    await llm.aclose()
