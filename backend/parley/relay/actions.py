"""What the relay session takes and returns: its configuration, its actions, and one turn's timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from parley.relay import wire
from parley.relay.policy import Policy

if TYPE_CHECKING:
    from parley.relay.injection import Lookup

# --- actions ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ToClient:
    data: str
    error_code: str | None = None  # set on error events the relay wrote, for the errors metric


@dataclass(slots=True)
class ToUpstream:
    data: str


@dataclass(slots=True)
class FetchContext:
    """Look up context for ``query``: for the turn ``turn``, or speculatively (``turn`` None) for the utterance
    ``item_id`` still in progress."""

    turn: int | None
    query: str
    item_id: str | None = None


@dataclass(slots=True)
class TurnDone:
    provider: str
    timings_ms: dict[str, float | None]


@dataclass(slots=True)
class ContextUsed:
    """A turn is answered with this context outcome (for the metrics)."""

    status: str  # ok | empty | off | timeout | error
    speculative: bool


@dataclass(slots=True)
class CloseSession:
    code: int
    reason: str


@dataclass(slots=True)
class UpstreamMoved:
    """The session's new upstream is ready after its first one died (for the metrics)."""

    from_provider: str
    to_provider: str
    gap_s: float  # from the loss to the new upstream's session.updated


Action = ToClient | ToUpstream | FetchContext | TurnDone | ContextUsed | CloseSession | UpstreamMoved


class AudioRate(Protocol):
    def allow(self, audio_ms: int, now: float) -> bool: ...


@dataclass(slots=True)
class SessionConfig:
    session_id: str
    provider: str
    upstream: wire.UpstreamSessionConfig
    self_interrupts: bool = True  # the upstream cancels its own response when the user starts speaking
    max_frame_bytes: int = 262_144
    kb: str = "default"
    context_timeout_s: float = 0.15  # the time box of the context lookup at speech end
    rag_speculative: bool = True
    rag_max_passage_chars: int = 400
    rag_decline: bool = True
    idle_timeout_s: float = 30.0
    max_duration_s: float = 600.0
    expiry_warning_s: float = 30.0
    limits: dict[str, Any] = field(default_factory=dict)
    quota: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None  # wall clock (epoch seconds), for the client
    replay_items: int = 40  # most items replayed into a new upstream after a failover
    parley_events: bool = False  # the client asked for parley.* events (notices)
    policy: Policy = field(default_factory=Policy)  # what the client may change in its session (policy)


@dataclass(slots=True)
class Turn:
    seq: int
    t0: float  # speech stopped (or the user text item confirmed)
    t1: float | None = None  # transcript
    t2: float | None = None  # retrieval done
    t3: float | None = None  # response.created
    t4: float | None = None  # first audio delta
    requested: bool = False  # the relay sent response.create
    sources: list[str] = field(default_factory=list)
    item_id: str | None = None  # the user's input item (audio turns)
    question: str = ""  # the user's words
    query: str = ""  # what was looked up (with the previous question for a follow-up)
    awaiting_speculation: bool = False  # waits for a running speculative lookup of the same words
    typed: bool = False  # a user text item: answered only once the client asks (response.create)
    client_asked: bool = False
    ready: tuple[Lookup, bool] | None = (
        None  # a typed turn's lookup (and whether speculative), while it waits
    )

    def timings_ms(self) -> dict[str, float | None]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round((t - self.t0) * 1000.0, 1)

        return {
            "transcript": rel(self.t1),
            "retrieval": rel(self.t2),
            "response_created": rel(self.t3),
            "first_audio": rel(self.t4),
        }
