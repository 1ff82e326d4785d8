"""The operator's policy over what a client may change in its session, and what the client is shown back.

Pure: it takes the client's ``session.update`` / ``response.create`` fields and returns what to send upstream,
plus the fields it refused. The session decides when (``session_sync``).

Every GA session field is in one of four kinds:
- **client**: listed in ``relay_client_session_fields``; checked (types, bounds) and passed upstream. A whole
  subtree may be listed (``audio.input.turn_detection``) or one leaf (``audio.input.transcription.language``).
- **locked**: not listed. A value equal to the operator's is accepted as a no-op (framework defaults pass); any
  other value is refused with an ``error`` naming the field, and the rest of the update still applies.
- **relay-owned** inside turn detection: ``create_response`` and ``interrupt_response``. The relay answers every
  turn itself after injecting the knowledge base's passages, and stops an answer the user speaks over, so ``true``
  is what the client gets and is accepted; ``false`` is refused. ``transcription: null`` and
  ``turn_detection: null`` are refused (turns and their transcripts drive the knowledge base).
- **connection-level**: ``model`` and ``tracing`` are chosen by the relay (``?model=``/``?provider=``, the operator's
  account), the transcription model by the upstream (the local server's faster-whisper). Accepted, never forwarded;
  ``session.updated`` shows what applies (Pipecat's own example sends a transcription model, and treats any
  ``error`` as fatal).

Instructions: the client's are appended to the operator's (``append``) or replace them (``replace``); the client is
shown only its own instructions, never the operator's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from parley.errors import InvalidRequest, NotAllowed
from parley.realtime.audio import WIRE_RATE
from parley.relay import wire
from parley.settings import Settings

logger = logging.getLogger(__name__)

# the operator's default (PARLEY_RELAY_CLIENT_SESSION_FIELDS)
DEFAULT_CLIENT_FIELDS: tuple[str, ...] = tuple(Settings.model_fields["relay_client_session_fields"].default)
# Chosen by the relay and its upstream, accepted and never forwarded; session.updated shows what applies.
CONNECTION_FIELDS = frozenset({"model", "tracing", "audio.input.transcription.model"})
# Every field of a GA ``session`` a client may send (anything else is refused as unknown).
KNOWN = frozenset(DEFAULT_CLIENT_FIELDS) | {
    "type",
    "model",
    "tracing",
    "include",
    "prompt",
    "reasoning",
    "audio",
    "audio.input",
    "audio.input.format",
    "audio.input.transcription",
    "audio.input.transcription.model",
    "audio.output",
    "audio.output.format",
}
_BRANCHES = frozenset({"audio", "audio.input", "audio.output", "audio.input.transcription"})
TD_RELAY_OWNED = {"create_response": True, "interrupt_response": True}  # as the client sees them
TD_KEYS = {
    "server_vad": {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"},
    "semantic_vad": {"type", "eagerness"},
}
EAGERNESS = ("low", "medium", "high", "auto")


@dataclass(frozen=True, slots=True)
class Policy:
    fields: frozenset[str] = frozenset(DEFAULT_CLIENT_FIELDS)
    instructions: Literal["append", "replace"] = "append"
    max_output_tokens: int = 4096
    silence_ms: tuple[int, int] = (200, 2000)
    turn_detection_types: tuple[str, ...] = ("server_vad", "semantic_vad")

    @classmethod
    def from_settings(cls, s: Any) -> Policy:
        return cls(
            fields=frozenset(s.relay_client_session_fields),
            instructions=s.relay_client_instructions,
            max_output_tokens=s.relay_client_max_output_tokens,
            silence_ms=(s.relay_client_silence_ms_min, s.relay_client_silence_ms_max),
        )

    def allows(self, path: str) -> bool:
        """``path`` or one of its parents is listed."""
        parts = path.split(".")
        return any(".".join(parts[:n]) in self.fields for n in range(1, len(parts) + 1))

    def combine(self, operator: str, client: str | None) -> str:
        if not client:
            return operator
        if self.instructions == "replace":
            return client
        return f"{operator}\n\n{client}".strip()


@dataclass(slots=True)
class Checked:
    """A client's session fields after the policy: the patch to send upstream, and what was refused."""

    patch: dict[str, Any]
    refused: list[tuple[str, str]] = field(default_factory=list)  # (param, why)
    instructions: str | None = None  # the client's own instructions, when it set them

    def error(self) -> InvalidRequest | None:
        if not self.refused:
            return None
        why = "; ".join(f"{param}: {reason}" for param, reason in self.refused)
        return NotAllowed(
            f"not applied ({why}); the rest of the update applies",
            code="session_field_not_allowed",
            param=f"session.{self.refused[0][0]}",
        )


def _get(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def _same_format(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") in ("audio/pcm", None)
        and value.get("rate", WIRE_RATE) == WIRE_RATE
        and set(value) <= {"type", "rate"}
    )


def _number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


class ClientSession:
    """What one client has set (merged over its accepted updates), and the upstream session that follows."""

    def __init__(self, policy: Policy, operator: wire.UpstreamSessionConfig) -> None:
        self.policy = policy
        self.operator = operator
        self.fields: dict[str, Any] = {}  # the client's accepted fields, as sent upstream (merged)
        self.instructions: str | None = None  # the client's own instructions

    # --- the upstream's session ---------------------------------------------------------------------------

    def operator_session(self) -> dict[str, Any]:
        return wire.session_fields(self.operator)

    def effective_instructions(self) -> str:
        return self.policy.combine(self.operator.instructions, self.instructions)

    def full(self) -> dict[str, Any]:
        """The whole upstream session: the operator's, with the client's accepted fields over it (failover)."""
        session = self.operator_session()
        _merge(session, copy.deepcopy(self.fields))
        session["instructions"] = self.effective_instructions()
        return session

    def commit(self, checked: Checked) -> None:
        """The upstream applied ``checked`` (its ``session.updated`` came)."""
        patch = {k: v for k, v in checked.patch.items() if k not in ("type", "instructions")}
        _merge(self.fields, copy.deepcopy(patch))
        if checked.instructions is not None:
            self.instructions = checked.instructions

    # --- the client's update ------------------------------------------------------------------------------

    def check(self, session: Any) -> Checked:
        """Sort a client's ``session`` object into what goes upstream and what is refused (see the module doc)."""
        if not isinstance(session, dict):
            raise InvalidRequest("session must be an object", param="session")
        if session.get("type", "realtime") != "realtime":
            raise NotAllowed('only session.type "realtime" is served by this relay', param="session.type")
        out = Checked(patch={"type": "realtime"})
        operator = self.operator_session()
        td = _get(operator, "audio.input.turn_detection")
        if isinstance(td, dict):
            td.update(TD_RELAY_OWNED)  # a locked field is compared with what the client would be shown
        self._walk(session, "", operator, out)
        return out

    def _walk(self, node: dict[str, Any], prefix: str, operator: dict[str, Any], out: Checked) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path == "type" or path in CONNECTION_FIELDS:
                continue
            if path not in KNOWN:
                out.refused.append((path, "unknown or unsupported field"))
            elif path in _BRANCHES and isinstance(value, dict):
                self._walk(value, path + ".", operator, out)
            elif path in _BRANCHES:
                why = "the relay needs transcripts" if path.endswith("transcription") else "must be an object"
                out.refused.append((path, why))
            elif path.endswith(".format"):
                if not _same_format(value):
                    out.refused.append((path, f"only audio/pcm at {WIRE_RATE} Hz"))
            elif not self.policy.allows(path):
                if value != _get(operator, path):
                    out.refused.append((path, "locked by the operator"))
            else:
                self._client_field(path, value, out)

    def _client_field(self, path: str, value: Any, out: Checked) -> None:
        check = _CHECKS.get(path)
        try:
            sent = check(self, value) if check is not None else value
        except InvalidRequest as err:
            out.refused.append((path, err.message))
            return
        if path == "instructions":
            out.instructions = sent
            sent = self.policy.combine(self.operator.instructions, sent)
        _put(out.patch, path, sent)

    # --- what the client is shown -------------------------------------------------------------------------

    def view(self, upstream: Any, session_id: str) -> dict[str, Any]:
        """The upstream's effective session as the client sees it: the relay's session id, the client's own
        instructions, and turn detection as the client experiences it (answered and interruptible)."""
        session = copy.deepcopy(upstream) if isinstance(upstream, dict) else {"type": "realtime"}
        session["id"] = session_id
        if "instructions" in session or self.instructions is not None:
            session["instructions"] = self.instructions or ""
        td = _get(session, "audio.input.turn_detection")
        if isinstance(td, dict):
            td.update(TD_RELAY_OWNED)
        return session

    # --- a client's response.create -----------------------------------------------------------------------

    def response(self, response: Any) -> dict[str, Any]:
        """A client's per-response fields, checked: the dict to send (refused whole when one is not allowed)."""
        if response in (None, {}):
            return {}
        if not isinstance(response, dict):
            raise InvalidRequest("response must be an object", param="response")
        out: dict[str, Any] = {}
        for key, value in response.items():
            param = f"response.{key}"
            rule = _RESPONSE.get(key)
            if rule is None:
                raise NotAllowed(f"{param} is not allowed through the relay", param=param)
            session_path, check = rule
            if session_path is not None and not self.policy.allows(session_path):
                raise NotAllowed(f"{param} is locked by the operator", param=param)
            try:
                out[key] = check(self, value)
            except InvalidRequest as err:
                raise NotAllowed(err.message, param=param) from None
        # GA per-response instructions replace the session's: the policy says how the client's combine
        if out.get("instructions"):
            out["instructions"] = self.policy.combine(self.operator.instructions, out["instructions"])
        return out


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "turn_detection":
            _merge(into[key], value)
        else:
            into[key] = value


# --- checks of client values -------------------------------------------------------------------------------


def _text(limit: int) -> Callable[[ClientSession, Any], str]:
    def check(_: ClientSession, value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise InvalidRequest(f"must be a string of at most {limit} characters")
        return value

    return check


def _modalities(_: ClientSession, value: Any) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise InvalidRequest('must be ["audio"] or ["text"]')
    return list(value)


def _max_tokens(cs: ClientSession, value: Any) -> int:
    cap = cs.policy.max_output_tokens
    if value == "inf":
        return cap  # shown back as the cap: what applies
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest('must be a positive integer or "inf"')
    return min(value, cap)


def _tools(_: ClientSession, value: Any) -> list[Any]:
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str) for t in value
    ):
        raise InvalidRequest("must be a list of function tools (type function, name, parameters)")
    return value


def _tool_choice(_: ClientSession, value: Any) -> Any:
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return value
    raise InvalidRequest('must be "auto", "none", "required" or a function')


def _bool(_: ClientSession, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest("must be true or false")
    return value


def _truncation(_: ClientSession, value: Any) -> Any:
    if value in ("auto", "disabled") or (isinstance(value, dict) and value.get("type") == "retention_ratio"):
        return value
    raise InvalidRequest('must be "auto", "disabled" or a retention_ratio')


def _noise_reduction(_: ClientSession, value: Any) -> Any:
    if value is None or (isinstance(value, dict) and value.get("type") in ("near_field", "far_field")):
        return value
    raise InvalidRequest('must be null or {"type": "near_field" | "far_field"}')


def _voice(_: ClientSession, value: Any) -> Any:
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and set(value) == {"id"}:
        return value
    raise InvalidRequest("must be a voice name or {id}")


def _speed(_: ClientSession, value: Any) -> float:
    if not _number(value, 0.25, 1.5):
        raise InvalidRequest("must be a number from 0.25 to 1.5")
    return float(value)


def _turn_detection(cs: ClientSession, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest("turn detection cannot be switched off through the relay (it starts each turn)")
    kind = value.get("type", "server_vad")
    if kind not in cs.policy.turn_detection_types:
        raise InvalidRequest(f"type must be one of {', '.join(cs.policy.turn_detection_types)}")
    out: dict[str, Any] = {"type": kind}
    for key, v in value.items():
        if key in TD_RELAY_OWNED:
            if v is not True:
                raise InvalidRequest(
                    f"{key} stays true: the relay answers each turn after the knowledge lookup"
                )
        elif key not in TD_KEYS[kind]:
            raise InvalidRequest(f"unknown field {key!r} for {kind}")
        elif key != "type":
            out[key] = _td_value(cs, key, v)
    out.update(create_response=False, interrupt_response=True)  # what the upstream must do for the relay
    return out


def _td_value(cs: ClientSession, key: str, v: Any) -> Any:
    low, high = cs.policy.silence_ms
    ok = {
        "threshold": lambda: _number(v, 0.0, 1.0),
        "prefix_padding_ms": lambda: _number(v, 0, 1000),
        "silence_duration_ms": lambda: _number(v, low, high),
        "idle_timeout_ms": lambda: v is None or _number(v, 5000, 30000),
        "eagerness": lambda: v in EAGERNESS,
    }[key]()
    if not ok:
        bounds = {"silence_duration_ms": f"{low}-{high}", "prefix_padding_ms": "0-1000", "threshold": "0-1"}
        raise InvalidRequest(f"{key} out of bounds ({bounds.get(key, 'see the GA reference')})")
    return v


_CHECKS: dict[str, Callable[[ClientSession, Any], Any]] = {
    "instructions": _text(20_000),
    "output_modalities": _modalities,
    "max_output_tokens": _max_tokens,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _bool,
    "truncation": _truncation,
    "audio.input.noise_reduction": _noise_reduction,
    "audio.input.transcription.language": _text(16),
    "audio.input.transcription.prompt": _text(2000),
    "audio.input.turn_detection": _turn_detection,
    "audio.output.voice": _voice,
    "audio.output.speed": _speed,
}


def _metadata(_: ClientSession, value: Any) -> Any:
    ok = value is None or (
        isinstance(value, dict)
        and len(value) <= 16
        and all(isinstance(k, str) and isinstance(v, str) and len(v) <= 512 for k, v in value.items())
    )
    if not ok:
        raise InvalidRequest("must be up to 16 string keys with string values")
    return value


def _conversation(_: ClientSession, value: Any) -> str:
    if value != "auto":
        raise InvalidRequest('only "auto": out-of-band responses are not served through the relay')
    return "auto"


def _response_voice(cs: ClientSession, value: Any) -> Any:
    voice = value.get("output", {}).get("voice") if isinstance(value, dict) else None
    if not isinstance(value, dict) or set(value) != {"output"} or set(value["output"]) != {"voice"}:
        raise InvalidRequest("only audio.output.voice may be set per response")
    return {"output": {"voice": _voice(cs, voice)}}


# response.create field -> (the session field whose policy governs it, its check)
_RESPONSE: dict[str, tuple[str | None, Callable[[ClientSession, Any], Any]]] = {
    "metadata": (None, _metadata),
    "conversation": (None, _conversation),
    "instructions": ("instructions", _text(20_000)),
    "output_modalities": ("output_modalities", _modalities),
    "max_output_tokens": ("max_output_tokens", _max_tokens),
    "tools": ("tools", _tools),
    "tool_choice": ("tool_choice", _tool_choice),
    "parallel_tool_calls": ("parallel_tool_calls", _bool),
    "audio": ("audio.output.voice", _response_voice),
}
