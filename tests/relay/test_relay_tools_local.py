"""Function calling end to end through the relay to the real local voice server: the OpenAI Agents SDK's
``RealtimeRunner`` (an agent with one function tool) -> the relay (uvicorn, loopback) -> Parley's local voice
server (uvicorn, loopback, its function calling) -> a scripted OpenAI-compatible chat-completions server over HTTP
(the layer that stands in for a model: the packaged one calls tools reliably only when forced).

The relay's own parts are real: the client's session.update with the tool goes through the policy, the typed turn
is answered by the relay after its knowledge lookup, the function call streams back, and the client's
function_call_output and response.create continue the answer.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from ga_conformance import check_server_event
from relay_harness import relay_settings, running_relay, token

sys.path.insert(0, str(Path(__file__).parents[1] / "local"))  # the local server's test helpers

from scripted_llm_server import call, scripted_llm, text  # noqa: E402
from session_fakes import fake_engines  # noqa: E402
from test_server_sdk import serving  # noqa: E402

from parley.local.llm import OpenAIChatLLM  # noqa: E402
from parley.settings import Settings  # noqa: E402

ANSWER = "It is sunny and 21 degrees in Paris."


async def test_the_agents_sdk_calls_a_tool_through_the_relay_on_the_local_server() -> None:
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        asked.append(city)
        return f"sunny and 21 C in {city}"

    steps = [call("get_weather", '{"city":', ' "Paris"}', call_id="call_r1"), text(ANSWER)]
    async with scripted_llm(steps) as llm:
        local_settings = Settings(llm_base_url=llm.base_url, llm_model="scripted", stt_partial_interval_ms=0)
        engines = fake_engines()
        engines.llm = OpenAIChatLLM(local_settings)
        async with (
            serving(local_settings, engines) as port,
            running_relay(relay_settings(f"ws://127.0.0.1:{port}/v1/realtime")) as relay,
        ):
            agent = RealtimeAgent(name="Weather", instructions="Use the weather tool.", tools=[get_weather])
            runner = RealtimeRunner(
                agent,
                config={
                    "model_settings": {
                        "turn_detection": {"type": "server_vad"},
                        "output_modalities": ["text"],
                    },
                    "tracing_disabled": True,
                },
            )
            model_config: Any = {
                "url": f"ws://127.0.0.1:{relay.port}/v1/realtime?model=parley-local",
                "headers": {"Authorization": f"Bearer {token('agents-local')}"},
            }
            seen: list[Any] = []
            async with asyncio.timeout(30), await runner.run(model_config=model_config) as session:
                await session.send_message("What's the weather in Paris?")
                async for event in session:
                    seen.append(event)
                    assert event.type != "error", event
                    model_event = event.data if event.type == "raw_model_event" else None
                    raw = model_event.data if getattr(model_event, "type", "") == "raw_server_event" else None
                    if isinstance(raw, dict) and raw.get("type"):
                        check_server_event(raw)
                        if raw["type"] == "response.output_text.done" and ANSWER in raw.get("text", ""):
                            break
        await engines.llm.aclose()  # type: ignore[attr-defined]
    assert asked == ["Paris"]
    assert next(e for e in seen if e.type == "tool_end").output == "sunny and 21 C in Paris"
    first, second = llm.requests
    assert first["tools"][0]["function"]["name"] == "get_weather"  # the client's tool reached the model
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_r1",
        "content": "sunny and 21 C in Paris",
    }
