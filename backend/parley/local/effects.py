"""What the local protocol (``parley.local.protocol``) asks its connection (``parley.local.connection``) to do.

A protocol step returns a list of ``Out``, carried out in order: a server event (a plain dict) is sent to the
client; an ``Effect`` starts or stops engine work. Every result of that work comes back into the protocol tagged
with the id given here (``job``, ``id``, ``response_id``); the protocol ignores results it no longer wants, so the
connection never decides anything. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.local.plan import Plan

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Transcribe:
    """Speech to text of ``pcm``: back as ``on_transcribed(job, text)`` or ``on_transcribe_failed(job, exc)``."""

    job: int
    item_id: str
    pcm: bytes
    language: str | None
    prompt: str | None


@dataclass(frozen=True, slots=True)
class Speculate:
    """Run ``plan`` early (LLM, and the first phrase's audio) into buffers; nothing is sent. A failure comes back
    as ``on_speculation_failed(id)``."""

    id: int
    plan: Plan


@dataclass(frozen=True, slots=True)
class Discard:
    """Stop speculation ``id`` (a no-op if it is gone)."""

    id: int


@dataclass(frozen=True, slots=True)
class Generate:
    """Answer: ``plan`` through LLM -> phrases -> TTS. Results come back as ``on_llm``, ``on_phrase``,
    ``on_audio``, ``on_phrase_end``, then ``on_generated`` or ``on_generation_failed``, each with
    ``response_id``. ``adopt``: the speculation whose buffered streams serve it first."""

    response_id: str
    plan: Plan
    adopt: int | None = None


@dataclass(frozen=True, slots=True)
class StopGenerating:
    """Stop the generation of ``response_id`` at once (closes its LLM and TTS streams)."""

    response_id: str


Effect = Transcribe | Speculate | Discard | Generate | StopGenerating
Out = Event | Effect
