"""Client events of the OpenAI Realtime API (GA names), parsed into pydantic models.

``parse_client_event(raw)`` is the one entry point: JSON text in, a typed event out, or an ``InvalidRequest``:
``invalid_json`` (not JSON / not an object), ``unknown_event`` (a ``type`` we do not know), ``invalid_value``
(known type, bad fields; ``param`` names the field as a dotted path). Unknown extra fields are ignored, as newer
SDKs may send fields this server does not use.

Server events are built in ``parley.realtime.server_events``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from parley.errors import InvalidRequest


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Event(_Model):
    event_id: str | None = None


# --- session.update -------------------------------------------------------------------------------------------


class AudioFormat(_Model):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] | None = None
    rate: int | None = None


class ServerVad(_Model):
    type: Literal["server_vad"]
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=5_000)
    silence_duration_ms: int | None = Field(default=None, ge=10, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = Field(default=None, ge=0)


class SemanticVad(_Model):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class Transcription(_Model):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class AudioInput(_Model):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: dict[str, Any] | None = None


class VoiceId(_Model):
    id: str


class AudioOutput(_Model):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class AudioConfig(_Model):
    input: AudioInput | None = None
    output: AudioOutput | None = None


MaxTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]


class SessionPatch(_Model):
    """A partial session. Which fields were sent is ``model_fields_set`` (so ``null`` differs from absent)."""

    type: Literal["realtime"] = "realtime"
    model: str | None = None
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    max_output_tokens: MaxTokens | None = None
    audio: AudioConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    tracing: Any = None
    prompt: Any = None
    truncation: Any = None
    include: list[str] | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: SessionPatch


# --- input audio buffer ---------------------------------------------------------------------------------------


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]
    response_id: str | None = None


# --- conversation items ---------------------------------------------------------------------------------------


class ContentPart(_Model):
    type: Literal["input_text", "input_audio", "text", "output_text", "output_audio", "audio"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None


class MessageItem(_Model):
    type: Literal["message"] = "message"
    id: str | None = Field(default=None, min_length=1, max_length=64)
    role: Literal["system", "user", "assistant"]
    content: list[ContentPart]
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class FunctionCallItem(_Model):
    type: Literal["function_call"]
    id: str | None = Field(default=None, min_length=1, max_length=64)
    call_id: str | None = Field(default=None, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    arguments: str
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class FunctionCallOutputItem(_Model):
    type: Literal["function_call_output"]
    id: str | None = Field(default=None, min_length=1, max_length=64)
    call_id: str = Field(min_length=1, max_length=128)
    output: str
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class ItemReference(_Model):
    type: Literal["item_reference"]
    id: str


ConversationItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")
]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ConversationItem


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


# --- responses ------------------------------------------------------------------------------------------------


class ResponseAudio(_Model):
    output: AudioOutput | None = None


class ResponseParams(_Model):
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    max_output_tokens: MaxTokens | None = None
    audio: ResponseAudio | None = None
    conversation: str | None = None
    input: list[Annotated[ConversationItem | ItemReference, Field(discriminator="type")]] | None = None
    metadata: dict[str, str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    prompt: Any = None


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | OutputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemDelete
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ResponseCreate
    | ResponseCancel,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES: frozenset[str] = frozenset(
    m.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for m in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        OutputAudioBufferClear,
        ConversationItemCreate,
        ConversationItemDelete,
        ConversationItemRetrieve,
        ConversationItemTruncate,
        ResponseCreate,
        ResponseCancel,
    )
)


def event_id_of(raw: str | bytes) -> str | None:
    """Best-effort ``event_id`` of a frame we could not parse, so the error can point at it."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    value = data.get("event_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and not _has_lone_surrogate(value) else None


def _has_lone_surrogate(data: Any) -> bool:
    """Any string (key or value) in parsed JSON holding a lone surrogate. Iterative: the JSON may nest as deep as
    the parser allowed."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _may_hold_surrogates(raw: str) -> bool:
    """Cheap pre-check: a lone surrogate needs a ``\\u`` escape (or, in a str from memory, a non-ASCII char)."""
    return "\\u" in raw or not raw.isascii()


def parse_client_event(raw: str | bytes) -> ClientEvent:
    if isinstance(raw, bytes):
        # Strictly: json.loads(bytes) would guess UTF-16/32 and let encoded surrogates through (surrogatepass).
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("A binary frame must be UTF-8 JSON.", code="invalid_json") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"The event is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("An event must be a JSON object.", code="invalid_json")
    if _may_hold_surrogates(raw) and _has_lone_surrogate(data):
        # Text that is not Unicode would be stored, then fail every later LLM request of the session (UTF-8).
        raise InvalidRequest(
            "The event holds text that is not valid Unicode (a lone surrogate).", code="invalid_json"
        )
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_TYPES:
        raise InvalidRequest(f"Unknown event type: {kind!r}.", code="unknown_event", param="type")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise _invalid_value(exc) from None


_UNION_TAGS = frozenset(
    {
        "server_vad",
        "semantic_vad",
        "str",
        "int",
        "VoiceId",
        "message",
        "function_call",
        "function_call_output",
        "item_reference",
    }
)


def _invalid_value(exc: ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]][1:]  # drop the union tag
    # Pydantic puts the tag of a nested union member in the path (e.g. ``turn_detection.server_vad.threshold``).
    loc = [p for p in loc if p not in _UNION_TAGS and (p.isidentifier() or p.isdigit())]
    param = ".".join(loc) or None
    where = f" at {param}" if param else ""
    return InvalidRequest(f"Invalid value{where}: {first['msg']}.", code="invalid_value", param=param)
