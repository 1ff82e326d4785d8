"""Function calling in a local voice session with fake engines: tools in the session and in a response, a streamed
tool call as GA ``function_call`` events (each checked against the SDK's models by the harness), and the client's
``function_call_output`` continuing the answer."""

from __future__ import annotations

import json
from typing import Any

from session_fakes import ScriptedLLM, fake_engines, running

from parley.local.engines import NO_TOOLS, LLMChunk, LLMEnd, ToolCallDelta, Tooling

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER["parameters"],
    },
}
CALL: list[LLMChunk] = [
    ToolCallDelta(0, "call_abc", "get_weather", ""),
    ToolCallDelta(0, None, None, '{"city": '),
    ToolCallDelta(0, "call_abc", "get_weather", '"Paris"}'),
    LLMEnd("tool_calls", input_tokens=120, output_tokens=11),
]


def user_text(text: str) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item}


async def test_session_tools_are_echoed_sent_to_the_llm_and_the_call_streams_as_function_call_events() -> (
    None
):
    engines = fake_engines()
    llm = ScriptedLLM(CALL)
    engines.llm = llm
    async with running(engines) as h:
        s = (await h.update(tools=[WEATHER], tool_choice="auto", output_modalities=["text"]))["session"]
        assert s["tools"] == [WEATHER] and s["tool_choice"] == "auto"
        await h.send(user_text("What's the weather in Paris?"))
        await h.send({"type": "response.create"})
        events = await h.collect_until("response.done")
        kinds = [e["type"] for e in events]
        assert kinds == [
            "conversation.item.added",  # the user's item
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
            "parley.timing",
            "response.done",
        ], kinds
        done = events[-1]["response"]
        call = done["output"][0]
        assert (call["type"], call["name"], call["call_id"], call["status"]) == (
            "function_call",
            "get_weather",
            "call_abc",
            "completed",
        )
        assert json.loads(call["arguments"]) == {"city": "Paris"}
        args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (args_done["arguments"], args_done["name"], args_done["output_index"]) == (
            '{"city": "Paris"}',
            "get_weather",
            0,
        )
        assert done["usage"]["input_tokens"] == 120 and done["usage"]["output_tokens"] == 11
        assert done["usage"]["total_tokens"] == 131
        assert llm.tooling[0] == Tooling((CHAT_WEATHER,), "auto")

        # The client runs the tool and asks for the answer: the LLM gets the call and its result.
        llm.deltas = ["It is sunny in Paris."]
        await h.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "call_abc", "output": '{"sky": "sunny"}'},
            }
        )
        added = await h.expect("conversation.item.added")
        assert added["item"]["type"] == "function_call_output" and added["previous_item_id"] == call["id"]
        await h.send({"type": "response.create"})
        done = (await h.expect("response.done"))["response"]
        assert done["output"][0]["content"][0]["text"] == "It is sunny in Paris."
        assert llm.calls[1][-2:] == [
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "sunny"}'},
        ]


async def test_audio_answer_with_text_then_a_call_and_per_response_tool_choice() -> None:
    engines = fake_engines()
    llm = ScriptedLLM(["Let me check. ", *CALL])
    engines.llm = llm
    async with running(engines) as h:
        await h.update(tools=[WEATHER])
        await h.send(user_text("Weather in Paris?"))
        await h.send(
            {
                "type": "response.create",
                "response": {"tool_choice": {"type": "function", "name": "get_weather"}},
            }
        )
        events = await h.collect_until("response.done")
        done = events[-1]["response"]
        assert [o["type"] for o in done["output"]] == ["message", "function_call"]
        assert done["output"][0]["content"][0]["transcript"] == "Let me check."
        added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
        assert added == [0, 1]
        assert llm.tooling[0].tool_choice == {"type": "function", "function": {"name": "get_weather"}}
        # tool_choice "none" for one response: no tools go to the LLM server at all
        llm.deltas = ["Fine."]
        await h.send({"type": "response.create", "response": {"tool_choice": "none"}})
        await h.expect("response.done")
        assert llm.tooling[1] == NO_TOOLS


async def test_bad_tools_are_refused_and_change_nothing() -> None:
    async with running() as h:
        bad: list[tuple[dict[str, Any], str]] = [
            ({"tools": [{"type": "mcp", "server_label": "x"}]}, "session.tools.0.type"),
            ({"tools": [{"type": "function"}]}, "session.tools.0.name"),
            ({"tools": [WEATHER, WEATHER]}, "session.tools.1.name"),
            (
                {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
                "session.tool_choice",
            ),
            ({"tool_choice": "sometimes"}, "session.tool_choice"),
        ]
        for n, (patch, param) in enumerate(bad):
            await h.send(
                {"type": "session.update", "event_id": f"t{n}", "session": {"type": "realtime", **patch}}
            )
            err = (await h.expect("error"))["error"]
            assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", param, f"t{n}"), err
        assert (await h.update())["session"]["tools"] == []
        await h.send(
            {
                "type": "response.create",
                "event_id": "r1",
                "response": {"tool_choice": {"type": "function", "name": "x"}},
            }
        )
        err = (await h.expect("error"))["error"]
        assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "response.tool_choice", "r1")
