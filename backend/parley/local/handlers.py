"""The client events of a local voice session: ``decode`` a frame, then one handler per event type, grouped by
namespace. Each takes the ``LocalProtocol`` and the parsed event and returns what to do (``parley.local.effects``);
a ``ParleyError`` it raises becomes one ``error`` event. Pure: the decisions about the turn stay with the protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parley.errors import InvalidRequest, error_event
from parley.local.conversation import item_from_wire
from parley.local.effects import Event, Out
from parley.local.input_buffer import MIN_COMMIT_MS
from parley.local.session_config import apply_update
from parley.realtime import events as ce
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS, b64_to_pcm
from parley.realtime.events import ClientEvent, event_id_of, parse_client_event
from parley.realtime.ids import new_id

if TYPE_CHECKING:
    from parley.local.protocol import LocalProtocol

logger = logging.getLogger(__name__)
Handler = Callable[["LocalProtocol", Any], list[Out]]
ROUTES: dict[str, Handler] = {}


def decode(raw: str | bytes, limit: int) -> ClientEvent | Event:
    """A client frame as an event, or the ``error`` event that refuses it (too large, not JSON, unknown type...)."""
    if len(raw) > limit:
        err = InvalidRequest(
            f"Event of {len(raw)} bytes exceeds the limit of {limit} bytes.", code="event_too_large"
        )
        return error_event(err)
    try:
        return parse_client_event(raw)
    except InvalidRequest as err:
        return error_event(err, event_id=event_id_of(raw))


def _on(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES[kind] = fn
        return fn

    return register


# --- session ----------------------------------------------------------------------------------------------------


@_on("session.update")
def _session_update(p: LocalProtocol, e: ce.SessionUpdate) -> list[Out]:
    old_td, old_language = p.config.turn_detection, p.config.language
    p.config = apply_update(p.config, e.session, voices=p.voices, default_language=p.options.language)
    if p.config.language != old_language:
        logger.info("session language %s -> %s (from the next turn)", old_language, p.config.language)
    out: list[Out] = []
    if p.config.turn_detection != old_td:
        out += p.drop_speech()
        p.new_vad()  # new parameters (or manual mode): a fresh detector from here on
    return [*out, ev.session_updated(p.session_wire())]


# --- input audio ------------------------------------------------------------------------------------------------


@_on("input_audio_buffer.append")
def _append(p: LocalProtocol, e: ce.InputAudioBufferAppend) -> list[Out]:
    try:
        pcm = b64_to_pcm(e.audio)
    except ValueError:
        raise InvalidRequest("audio is not valid base64.", code="invalid_value", param="audio") from None
    p.buffer.check_append(pcm, enforce_total=not p.vad_on)
    p.buffer.append(pcm)
    return p.audio_in(pcm)


@_on("input_audio_buffer.commit")
def _commit(p: LocalProtocol, e: ce.InputAudioBufferCommit) -> list[Out]:
    speech = p.speech
    start = speech.start if speech is not None else p.buffer.start
    if (p.buffer.end - start) // BYTES_PER_MS < MIN_COMMIT_MS:
        raise InvalidRequest(
            f"Cannot commit: the input audio buffer holds less than {MIN_COMMIT_MS} ms of audio.",
            code="input_audio_buffer_commit_empty",
        )
    p.stop_counting_idle()
    out = p.commit(speech.item_id if speech is not None else new_id("item"), start, p.buffer.end, auto=False)
    p.new_vad()  # a manual commit ends any speech in progress
    return out


@_on("input_audio_buffer.clear")
def _clear(p: LocalProtocol, e: ce.InputAudioBufferClear) -> list[Out]:
    p.buffer.clear()
    out = p.drop_speech()
    p.new_vad()
    return [*out, ev.input_audio_buffer_cleared()]


@_on("output_audio_buffer.clear")
def _output_clear(p: LocalProtocol, e: ce.OutputAudioBufferClear) -> list[Out]:
    raise InvalidRequest(
        "output_audio_buffer.clear is WebRTC-only; over WebSocket the client stops its own playback "
        "(then sends conversation.item.truncate).",
        code="unsupported_event",
        param="type",
    )


# --- conversation -----------------------------------------------------------------------------------------------


@_on("conversation.item.create")
def _item_create(p: LocalProtocol, e: ce.ConversationItemCreate) -> list[Out]:
    item, pcm = item_from_wire(e.item, "item")
    prev = p.conversation.insert(item, e.previous_item_id)
    out: list[Out] = [ev.item_added(item.to_wire(), prev)]
    if pcm is not None:
        out.append(p.transcribe(item.id, pcm))
    else:
        out.append(ev.item_done(item.to_wire(), prev))
    return out


@_on("conversation.item.delete")
def _item_delete(p: LocalProtocol, e: ce.ConversationItemDelete) -> list[Out]:
    p.conversation.delete(e.item_id)
    return [ev.item_deleted(e.item_id)]


@_on("conversation.item.retrieve")
def _item_retrieve(p: LocalProtocol, e: ce.ConversationItemRetrieve) -> list[Out]:
    return [ev.item_retrieved(p.conversation.get(e.item_id).to_wire())]


@_on("conversation.item.truncate")
def _item_truncate(p: LocalProtocol, e: ce.ConversationItemTruncate) -> list[Out]:
    item = p.conversation.get(e.item_id)
    if item.role != "assistant" or item.kind != "audio":
        raise InvalidRequest(
            "Only assistant audio items can be truncated.", code="invalid_value", param="item_id"
        )
    if e.content_index != 0:
        raise InvalidRequest(
            "The item has one content part (index 0).", code="invalid_value", param="content_index"
        )
    if e.audio_end_ms > item.audio_ms:
        raise InvalidRequest(
            f"audio_end_ms {e.audio_end_ms} is beyond the item's audio ({item.audio_ms} ms sent).",
            code="invalid_value",
            param="audio_end_ms",
        )
    item.truncated_ms = (
        e.audio_end_ms if item.truncated_ms is None else min(item.truncated_ms, e.audio_end_ms)
    )
    return [ev.item_truncated(item.id, e.content_index, e.audio_end_ms)]


# --- responses --------------------------------------------------------------------------------------------------


@_on("response.create")
def _response_create(p: LocalProtocol, e: ce.ResponseCreate) -> list[Out]:
    if p.response is not None:
        raise InvalidRequest(
            f"Conversation already has an active response in progress: {p.response.spec.id}. "
            "Wait for it to finish (response.done) or cancel it first.",
            code="conversation_already_has_active_response",
        )
    return p.start_response(e.response, event_id=e.event_id)


@_on("response.cancel")
def _response_cancel(p: LocalProtocol, e: ce.ResponseCancel) -> list[Out]:
    active = p.response
    if active is None or (e.response_id is not None and e.response_id != active.spec.id):
        raise InvalidRequest(
            "Cancellation failed: no active response found.", code="response_cancel_not_active"
        )
    return p.cancel("client_cancelled")
