"""Function calling over real HTTP: the local voice server on a loopback port, its LLM client talking to an
OpenAI-compatible server on another, driven by clients no one on the team wrote.

- A scripted SSE chat-completions server (``scripted_llm_server``) with the stock ``openai`` SDK, and with the
  OpenAI Agents SDK's ``RealtimeRunner`` (an agent with one function tool, a typed turn).
- ``-m models``: a real llama.cpp server with the packaged Qwen2.5-Coder-0.5B. Its server (llama-cpp-python 0.3.x)
  streams real ``tool_calls`` only for a named ``tool_choice`` (grammar-constrained: 10/10 valid calls with the
  right argument, measured); with ``"auto"`` the model writes the call as plain JSON text (9/10, and 2 of 5
  questions that need no tool got one too) and ``chatml-function-calling``'s "auto" path returns
  ``functions.<name>:`` as text (0/10). So the real-model test forces the tool for the first response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from scripted_llm_server import call, scripted_llm, text
from session_fakes import fake_engines
from test_server_sdk import connect, serving

from parley.local.engines import Engines
from parley.local.llm import OpenAIChatLLM
from parley.settings import Settings

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ANSWER = "It is sunny and 21 degrees in Paris."


def user_text(words: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": words}]}


def _engines(base_url: str) -> tuple[Settings, Engines]:
    settings = Settings(llm_base_url=base_url, llm_model="scripted", stt_partial_interval_ms=0)
    engines = fake_engines()
    engines.llm = OpenAIChatLLM(settings)
    return settings, engines


async def test_openai_sdk_typed_turn_with_a_tool_over_http() -> None:
    steps = [
        call("get_weather", '{"city":', ' "Paris"}', call_id="call_w1"),
        text("It is sunny ", "in Paris."),
    ]
    async with scripted_llm(steps) as llm:
        settings, engines = _engines(llm.base_url)
        async with serving(settings, engines) as port, connect(port) as c:
            conn = c.conn
            await conn.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "tools": [WEATHER],
                    "tool_choice": "auto",
                }
            )
            updated = await c.expect("session.updated")
            assert updated.session.tools[0].name == "get_weather"
            await conn.conversation.item.create(item=user_text("Weather in Paris?"))
            await conn.response.create()
            done = await c.expect("response.done")
            fc = done.response.output[0]
            assert (fc.type, fc.name, fc.call_id, json.loads(fc.arguments)) == (
                "function_call",
                "get_weather",
                "call_w1",
                {"city": "Paris"},
            )
            deltas = "".join(e.delta for e in c.of("response.function_call_arguments.delta"))
            assert deltas == c.of("response.function_call_arguments.done")[0].arguments == fc.arguments
            assert done.response.usage.input_tokens == 50 and done.response.usage.output_tokens == 7

            await conn.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": "call_w1",
                    "output": '{"sky": "sunny", "c": 21}',
                }
            )
            await conn.response.create()
            done = await c.expect("response.done")
            assert done.response.output[0].content[0].text == "It is sunny in Paris."
        await engines.llm.aclose()  # type: ignore[attr-defined]
    first, second = llm.requests
    assert (
        first["tools"]
        == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
        and first["tool_choice"] == "auto"
    )
    assert first["stream_options"] == {"include_usage": True}
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_w1"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_w1",
        "content": '{"sky": "sunny", "c": 21}',
    }


async def test_agents_sdk_realtime_runner_calls_the_tool_and_uses_its_output() -> None:
    agents = pytest.importorskip("agents")
    from agents.realtime import RealtimeAgent, RealtimeRunner

    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        asked.append(city)
        return f"sunny and 21 C in {city}"

    steps = [call("get_weather", '{"city": "Paris"}', call_id="call_a1"), text(ANSWER)]
    async with scripted_llm(steps) as llm:
        settings, engines = _engines(llm.base_url)
        async with serving(settings, engines) as port:
            agent = RealtimeAgent(
                name="Weather", instructions="Answer with the weather tool.", tools=[get_weather]
            )
            runner = RealtimeRunner(
                agent,
                config={
                    "model_settings": {
                        "turn_detection": {"type": "server_vad"},  # semantic_vad is refused here
                        "output_modalities": ["text"],
                    },
                    "tracing_disabled": True,
                },
            )
            session = await runner.run(
                model_config={
                    "url": f"ws://127.0.0.1:{port}/v1/realtime?model=parley-local&parley_events=false",
                    "api_key": "x",
                }
            )
            seen: list[Any] = []
            async with session:
                await session.send_message("What's the weather in Paris?")
                async with asyncio.timeout(30):
                    async for event in _events(session):
                        seen.append(event)
                        if event.type == "error":
                            pytest.fail(f"the Agents SDK saw an error: {event.error}")
                        if _answered(event):
                            break
        await engines.llm.aclose()  # type: ignore[attr-defined]
    assert asked == ["Paris"]
    tool_end = next(e for e in seen if e.type == "tool_end")
    assert tool_end.output == "sunny and 21 C in Paris"
    # the answer was made from the tool's output
    assert llm.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_a1",
        "content": "sunny and 21 C in Paris",
    }


async def _events(session: Any) -> AsyncIterator[Any]:
    async for event in session:
        yield event


def _answered(event: Any) -> bool:
    """The SDK's raw event for the second response's text being done."""
    if event.type != "raw_model_event":
        return False
    data = event.data
    return (
        getattr(data, "type", None) == "raw_server_event"
        and data.data.get("type") == "response.output_text.done"
    )


# --- a real llama.cpp server with the packaged Qwen -----------------------------------------------------------


@pytest.fixture(scope="module")
async def qwen_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    pytest.importorskip("llama_cpp")
    from parley.llama_server import LlamaServer
    from parley.llm_models import ModelUnavailable

    settings = Settings(llama_port=0, llm_model="qwen", llama_model_path="qwen2.5-0.5b")
    try:
        server = LlamaServer(settings, log_path=tmp_path_factory.mktemp("qwen") / "llama.log")
    except ModelUnavailable as exc:
        pytest.skip(str(exc))
    async with server:
        yield server


@pytest.mark.models
async def test_real_llama_server_calls_the_forced_tool_then_answers_from_its_output(qwen_server: Any) -> None:
    settings, engines = _engines(qwen_server.base_url)
    settings = settings.model_copy(update={"llm_model": "qwen", "llm_max_tokens": 60})
    engines.llm = OpenAIChatLLM(settings)
    async with serving(settings, engines) as port, connect(port) as c:
        conn = c.conn
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "instructions": "You are a weather assistant. Answer in one short sentence.",
                "tools": [WEATHER],
            }
        )
        await c.expect("session.updated")
        await conn.conversation.item.create(item=user_text("What's the weather in Paris?"))
        await conn.response.create(response={"tool_choice": {"type": "function", "name": "get_weather"}})
        done = await c.expect("response.done", 120)
        fc = done.response.output[0]
        assert fc.type == "function_call" and fc.name == "get_weather", done.response
        assert json.loads(fc.arguments)["city"] == "Paris"
        assert c.of("response.function_call_arguments.delta")
        await conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": fc.call_id,
                "output": "Sunny, 21 degrees Celsius.",
            }
        )
        await conn.response.create(response={"tool_choice": "none"})
        done = await c.expect("response.done", 120)
        answer = done.response.output[0].content[0].text
        assert "sunny" in answer.lower() or "21" in answer, answer
    await engines.llm.aclose()  # type: ignore[attr-defined]
