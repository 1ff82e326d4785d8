"""Function tools of a local voice session: the GA ``tools`` / ``tool_choice`` checked, echoed, and turned into the
chat-completions request the LLM server gets. Pure data, no I/O.

GA shapes: a tool is ``{"type": "function", "name", "description", "parameters"}`` (MCP tools are refused: the
local server runs no MCP client); ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or
``{"type": "function", "name"}``. Chat-completions nests the function: ``{"type": "function", "function": {...}}``
and ``{"type": "function", "function": {"name"}}``. ``"none"`` sends no tools at all, so no server is tempted to
call one (llama.cpp's template would still describe them to the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from parley.errors import InvalidRequest
from parley.local.engines import NO_TOOLS, Message, Tooling

CHOICES = ("auto", "none", "required")


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str
    parameters: str  # canonical JSON of the schema ("" when none was given)

    def to_wire(self) -> Message:
        params = json.loads(self.parameters) if self.parameters else None
        return {"type": "function", "name": self.name, "description": self.description, "parameters": params}

    def to_chat(self) -> Message:
        fn: Message = {"name": self.name, "description": self.description}
        if self.parameters:
            fn["parameters"] = json.loads(self.parameters)
        return {"type": "function", "function": fn}


ToolChoice = str  # "auto" | "none" | "required" | "function:<name>"


@dataclass(frozen=True, slots=True)
class Tools:
    """The tools of a session or of one response."""

    tools: tuple[FunctionTool, ...] = ()
    choice: ToolChoice = "auto"

    def wire_tools(self) -> list[Message]:
        return [t.to_wire() for t in self.tools]

    def wire_choice(self) -> str | Message:
        if self.choice.startswith("function:"):
            return {"type": "function", "name": self.choice.removeprefix("function:")}
        return self.choice

    def tooling(self) -> Tooling:
        """What the LLM server is sent."""
        if not self.tools or self.choice == "none":
            return NO_TOOLS
        choice: str | Message = self.choice
        if self.choice.startswith("function:"):
            choice = {"type": "function", "function": {"name": self.choice.removeprefix("function:")}}
        return Tooling(tuple(t.to_chat() for t in self.tools), choice)


def parse_tools(raw: Any, param: str) -> tuple[FunctionTool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("tools must be a list.", code="invalid_value", param=param)
    out: list[FunctionTool] = []
    for n, tool in enumerate(raw):
        where = f"{param}.{n}"
        if not isinstance(tool, dict):
            raise InvalidRequest("A tool must be an object.", code="invalid_value", param=where)
        kind = tool.get("type", "function")
        if kind != "function":
            raise InvalidRequest(
                f"Only function tools are supported by the local voice server, not {kind!r}.",
                code="invalid_value",
                param=f"{where}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise InvalidRequest(
                "A function tool needs a name (1-64 characters).", code="invalid_value", param=f"{where}.name"
            )
        if any(t.name == name for t in out):
            raise InvalidRequest(
                f"Two tools are named {name!r}.", code="invalid_value", param=f"{where}.name"
            )
        description = tool.get("description") or ""
        params = tool.get("parameters")
        if not isinstance(description, str) or (params is not None and not isinstance(params, dict)):
            raise InvalidRequest(
                "description must be a string and parameters a JSON schema object.",
                code="invalid_value",
                param=where,
            )
        out.append(FunctionTool(name, description, json.dumps(params, sort_keys=True) if params else ""))
    return tuple(out)


def parse_choice(raw: Any, tools: tuple[FunctionTool, ...], param: str) -> ToolChoice:
    if raw is None:
        return "auto"
    if isinstance(raw, str) and raw in CHOICES:
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        name = raw.get("name")
        if not any(t.name == name for t in tools):
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not among the tools.",
                code="invalid_value",
                param=param,
            )
        return f"function:{name}"
    raise InvalidRequest(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}.',
        code="invalid_value",
        param=param,
    )


def update_tools(current: Tools, raw_tools: Any, raw_choice: Any, *, sent: set[str], prefix: str) -> Tools:
    """``current`` with the ``tools`` / ``tool_choice`` of an update or a response (fields absent from ``sent`` are
    kept). A forced choice must name one of the resulting tools."""
    tools = parse_tools(raw_tools, f"{prefix}tools") if "tools" in sent else current.tools
    if "tool_choice" in sent:
        choice = parse_choice(raw_choice, tools, f"{prefix}tool_choice")
    else:
        choice = current.choice
        if choice.startswith("function:") and not any(f"function:{t.name}" == choice for t in tools):
            choice = "auto"  # the forced tool is gone
    return Tools(tools, choice)
