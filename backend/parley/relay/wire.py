"""The JSON the relay itself writes or checks: client frames parsed as checked, the upstream ``session.update``
and the ``parley.*`` events. Pure functions; the session decides when to use them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from parley.errors import InvalidRequest
from parley.realtime.ids import new_id

# The first key of a JSON object is at the top level, so when ``type`` comes first (as every Realtime server
# writes it) this reads the event type without parsing a 100 kB audio frame.
_TYPE_HEAD = re.compile(r'\{\s*"type"\s*:\s*"([A-Za-z0-9_.]+)"')


def peek_type(text: str) -> str | None:
    m = _TYPE_HEAD.match(text)
    return m.group(1) if m else None


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class UpstreamSessionConfig:
    """What the relay imposes on every upstream session."""

    instructions: str
    voice: str = ""
    transcription_model: str = "gpt-4o-mini-transcribe"


def session_update_event(session: dict[str, Any], event_id: str | None = None) -> str:
    return dumps({"type": "session.update", "event_id": event_id or new_id("event"), "session": session})


def session_fields(cfg: UpstreamSessionConfig) -> dict[str, Any]:
    """The session the operator imposes on every upstream (a client's accepted fields go over it)."""
    pcm = {"type": "audio/pcm", "rate": 24_000}
    output: dict[str, Any] = {"format": pcm}
    if cfg.voice:
        output["voice"] = cfg.voice
    return {
        "type": "realtime",
        "instructions": cfg.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": pcm,
                "transcription": {"model": cfg.transcription_model},
                "turn_detection": {
                    "type": "server_vad",
                    "create_response": False,
                    "interrupt_response": True,
                },
            },
            "output": output,
        },
    }


def system_item(text: str, *, item_id: str | None = None, event_prefix: str = "event") -> str:
    item: dict[str, Any] = {
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id is not None:
        item = {"id": item_id, **item}
    return client_event_id("conversation.item.create", event_prefix, item=item)


def client_event(type_: str, **fields: Any) -> str:
    return dumps({"type": type_, "event_id": new_id("event"), **fields})


def client_event_id(type_: str, event_prefix: str, **fields: Any) -> str:
    """A client event whose ``event_id`` starts with ``event_prefix`` (so the relay recognises errors about it)."""
    return dumps({"type": type_, "event_id": new_id(event_prefix.rstrip("_")), **fields})


def parley_event(type_: str, **fields: Any) -> str:
    return dumps({"type": type_, "event_id": new_id("event"), **fields})


# --- client frames: parsed, bounded and re-serialised in one place ----------------------------------------------

MAX_EVENT_ID_CHARS = 64


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # parsers disagree on which one wins: refuse, so what is checked is what is forwarded
            raise InvalidRequest(f"duplicate key {key[:40]!r} in an object", code="invalid_json")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    # Python reads NaN and Infinity (and would write them back); strict JSON parsers, the OpenAI API's among them,
    # do not: refused, so nothing the upstream cannot parse is forwarded.
    raise InvalidRequest(f"{name} is not a JSON value", code="invalid_json")


def parse_client_frame(text: str) -> tuple[dict[str, Any], str]:
    """A client frame as an event and the exact text to forward: the event re-serialised, so the upstream sees
    what the relay checked (no duplicate keys, no lone surrogates, no NaN or Infinity, nothing the relay's parser
    read differently). Raises InvalidRequest for anything that is not one well-formed JSON object."""
    try:
        ev = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidRequest("frame nests too deeply", code="invalid_json") from None
    except ValueError as exc:
        if isinstance(exc, InvalidRequest):
            raise
        raise InvalidRequest("frame is not JSON", code="invalid_json") from None
    if not isinstance(ev, dict):
        raise InvalidRequest("an event must be a JSON object", code="invalid_json")
    fast = _append_text(ev, text)
    if fast is not None:
        return ev, fast
    try:
        checked = dumps(ev)
        checked.encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        raise InvalidRequest("frame holds text that is not valid Unicode", code="invalid_json") from None
    return ev, checked


_APPEND_KEYS = frozenset({"type", "audio", "event_id"})


def _append_text(ev: dict[str, Any], raw: str) -> str | None:
    """The hot path: an audio append re-serialised without re-encoding its audio. Safe when the frame held no
    escape at all (so no string in it has a quote, a backslash or a control character: strict JSON refuses raw
    ones) and the audio is ASCII, as base64 always is; anything else takes the general path."""
    if "\\" in raw or ev.get("type") != "input_audio_buffer.append" or not _APPEND_KEYS.issuperset(ev):
        return None
    audio, event_id = ev.get("audio"), ev.get("event_id")
    if not isinstance(audio, str) or not audio.isascii():
        return None
    head = '{"type":"input_audio_buffer.append"'
    if event_id is not None:
        if not isinstance(event_id, str) or not event_id.isascii():
            return None
        head += f',"event_id":{json.dumps(event_id)}'
    return f'{head},"audio":"{audio}"}}'


def event_id_of(ev: dict[str, Any]) -> str | None:
    """The client's ``event_id``, if it is one the relay may echo in an error."""
    event_id = ev.get("event_id")
    if isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID_CHARS:
        return event_id
    return None


# --- client event checks: raise InvalidRequest / NotAllowed, return nothing -----------------------------------


def check_truncate(ev: dict[str, Any]) -> None:
    ok = (
        isinstance(ev.get("item_id"), str)
        and isinstance(ev.get("content_index", 0), int)
        and isinstance(ev.get("audio_end_ms"), int)
        and ev["audio_end_ms"] >= 0
    )
    if not ok:
        raise InvalidRequest(
            "truncate needs item_id, content_index and audio_end_ms >= 0", param="audio_end_ms"
        )
