"""``Plan``: what a response sends to the engines (the exact LLM request and how its text is spoken). Pure data.

Equal plans make equal requests, so the output of one serves the other: the early answer started in the user's
pause (``parley.local.speculation``) is adopted by the response whose plan equals its own. ``Generate`` and
``Speculate`` (``parley.local.effects``) both carry one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from parley.local.engines import NO_TOOLS, Message, Tooling
from parley.local.response_run import ResponseSpec


@dataclass(frozen=True, slots=True)
class Plan:
    messages: tuple[str, ...]  # each message as canonical JSON
    max_tokens: int
    audio: bool
    tts_voice: str | None
    tooling: Tooling = NO_TOOLS
    speed: float = 1.0
    language: str | None = None  # the voice's language (None: by voice, the server's default)

    @classmethod
    def of(cls, spec: ResponseSpec, messages: Sequence[Message]) -> Plan:
        return cls.build(
            messages,
            spec.max_tokens,
            spec.audio,
            spec.tts_voice,
            spec.tools.tooling(),
            spec.speed,
            spec.language,
        )

    @classmethod
    def build(
        cls,
        messages: Sequence[Message],
        max_tokens: int,
        audio: bool,
        tts_voice: str | None,
        tooling: Tooling = NO_TOOLS,
        speed: float = 1.0,
        language: str | None = None,
    ) -> Plan:
        msgs = tuple(json.dumps(m, sort_keys=True) for m in messages)
        return cls(msgs, max_tokens, audio, tts_voice, tooling, speed, language)

    def llm_messages(self) -> list[Message]:
        return [json.loads(m) for m in self.messages]
