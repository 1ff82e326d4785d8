"""The context hook: what the relay asks for when a user turn ends, before it asks the upstream to answer.

The knowledge-base issue fills this with a real store; the default finds nothing. The relay time-boxes every call
(``settings.context_timeout_ms``); a slow or failing provider makes the turn proceed without context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Passage:
    text: str
    source: str
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Context:
    passages: list[Passage] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """Distinct sources, best first."""
        return list(dict.fromkeys(p.source for p in self.passages))


@runtime_checkable
class ContextProvider(Protocol):
    async def retrieve(self, query: str, *, session_id: str) -> Context: ...

    async def ready(self) -> bool:
        """True once the provider can answer (models loaded, store reachable); used by ``/readyz``."""
        ...


class NoContext:
    """The default provider: never any context."""

    async def retrieve(self, query: str, *, session_id: str) -> Context:
        return Context()

    async def ready(self) -> bool:
        return True


def format_passages(context: Context) -> str:
    """The text of the system item the relay injects before asking for an answer."""
    lines = ["Reference passages for the user's last question (cite nothing, just use them if relevant):"]
    for i, p in enumerate(context.passages, 1):
        lines.append(f"[{i}] ({p.source}) {p.text.strip()}")
    return "\n".join(lines)
