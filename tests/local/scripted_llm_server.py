"""A scripted OpenAI-compatible chat-completions server on a loopback port (one test layer; real models elsewhere).

``async with scripted_llm([step, ...]) as llm:`` serves ``POST /v1/chat/completions`` (streamed SSE) and
``GET /v1/models`` on 127.0.0.1. Each request takes the next step: a list of chunk deltas (``{"content": ...}`` or
``{"tool_calls": [...]}``) and a finish reason, streamed as chat-completion chunks, then a usage chunk and
``[DONE]``. A request beyond the script is answered 500 and recorded in ``llm.unexpected``; leaving the block
with steps unused or unexpected requests fails the test. ``llm.requests`` holds every request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from loopback import uvicorn_on_loopback
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Step:
    deltas: list[dict[str, Any]]
    finish: str = "stop"
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 50, "completion_tokens": 7})


def text(*pieces: str) -> Step:
    return Step([{"content": p} for p in pieces])


def call(name: str, *arg_pieces: str, call_id: str = "call_1") -> Step:
    first = {
        "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        ]
    }
    rest = [{"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in arg_pieces]
    return Step([first, *rest], finish="tool_calls")


class ScriptedLLMServer:
    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[dict[str, Any]] = []
        self.unexpected: list[dict[str, Any]] = []
        self.base_url = ""
        self.changed = asyncio.Event()

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.changed.set()
        if not self.steps:
            self.unexpected.append(body)
            return JSONResponse({"error": {"message": "no scripted step left"}}, status_code=500)
        step = self.steps.pop(0)

        async def sse() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None) -> str:
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                return f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

            yield chunk({"role": "assistant"}, None)
            for delta in step.deltas:
                yield chunk(delta, None)
            yield chunk({}, step.finish)
            yield f"data: {json.dumps({'choices': [], 'usage': step.usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models),
            ]
        )


@contextlib.asynccontextmanager
async def scripted_llm(steps: list[Step]) -> AsyncIterator[ScriptedLLMServer]:
    llm = ScriptedLLMServer(steps)
    config = uvicorn.Config(
        llm.app(), host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
    )
    async with uvicorn_on_loopback(config) as port:
        llm.base_url = f"http://127.0.0.1:{port}/v1"
        yield llm
    assert not llm.unexpected, f"requests beyond the script: {llm.unexpected}"
    assert not llm.steps, f"scripted steps never requested: {llm.steps}"
