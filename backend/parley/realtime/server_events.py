"""Builders for the server events Parley's local voice server emits, in the exact OpenAI Realtime GA shapes.

Each function returns a plain JSON-ready dict with a fresh ``event_id``. Items and responses are passed in already
shaped (see ``parley.local.conversation`` and ``parley.local.response_run``). The ``error`` event is built by
``parley.errors.error_event``, the one place errors become protocol events.
"""

from __future__ import annotations

from typing import Any

from parley.realtime.ids import new_id

Event = dict[str, Any]


def _event(kind: str, **fields: Any) -> Event:
    return {"type": kind, "event_id": new_id("event"), **fields}


# --- session --------------------------------------------------------------------------------------------------


def session_created(session: dict[str, Any]) -> Event:
    return _event("session.created", session=session)


def session_updated(session: dict[str, Any]) -> Event:
    return _event("session.updated", session=session)


# --- input audio buffer ---------------------------------------------------------------------------------------


def input_audio_buffer_committed(item_id: str, previous_item_id: str | None) -> Event:
    return _event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def timeout_triggered(item_id: str, audio_start_ms: int, audio_end_ms: int) -> Event:
    return _event(
        "input_audio_buffer.timeout_triggered",
        item_id=item_id,
        audio_start_ms=audio_start_ms,
        audio_end_ms=audio_end_ms,
    )


def input_audio_buffer_cleared() -> Event:
    return _event("input_audio_buffer.cleared")


def speech_started(item_id: str, audio_start_ms: int) -> Event:
    return _event("input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms)


def speech_stopped(item_id: str, audio_end_ms: int) -> Event:
    return _event("input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=audio_end_ms)


# --- conversation ---------------------------------------------------------------------------------------------


def item_added(item: dict[str, Any], previous_item_id: str | None) -> Event:
    return _event("conversation.item.added", previous_item_id=previous_item_id, item=item)


def item_done(item: dict[str, Any], previous_item_id: str | None) -> Event:
    return _event("conversation.item.done", previous_item_id=previous_item_id, item=item)


def item_deleted(item_id: str) -> Event:
    return _event("conversation.item.deleted", item_id=item_id)


def item_retrieved(item: dict[str, Any]) -> Event:
    return _event("conversation.item.retrieved", item=item)


def item_truncated(item_id: str, content_index: int, audio_end_ms: int) -> Event:
    return _event(
        "conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
    )


def transcription_delta(item_id: str, delta: str, content_index: int = 0) -> Event:
    return _event(
        "conversation.item.input_audio_transcription.delta",
        item_id=item_id,
        content_index=content_index,
        delta=delta,
    )


def transcription_completed(
    item_id: str, transcript: str, audio_seconds: float, content_index: int = 0
) -> Event:
    return _event(
        "conversation.item.input_audio_transcription.completed",
        item_id=item_id,
        content_index=content_index,
        transcript=transcript,
        usage={"type": "duration", "seconds": round(audio_seconds, 3)},
    )


def transcription_failed(item_id: str, error: dict[str, Any], content_index: int = 0) -> Event:
    return _event(
        "conversation.item.input_audio_transcription.failed",
        item_id=item_id,
        content_index=content_index,
        error=error,
    )


# --- responses ------------------------------------------------------------------------------------------------


def response_created(response: dict[str, Any]) -> Event:
    return _event("response.created", response=response)


def response_done(response: dict[str, Any]) -> Event:
    return _event("response.done", response=response)


def output_item_added(response_id: str, output_index: int, item: dict[str, Any]) -> Event:
    return _event("response.output_item.added", response_id=response_id, output_index=output_index, item=item)


def output_item_done(response_id: str, output_index: int, item: dict[str, Any]) -> Event:
    return _event("response.output_item.done", response_id=response_id, output_index=output_index, item=item)


def _part_event(
    kind: str, rid: str, item_id: str, output_index: int, content_index: int, **fields: Any
) -> Event:
    return _event(
        kind,
        response_id=rid,
        item_id=item_id,
        output_index=output_index,
        content_index=content_index,
        **fields,
    )


def content_part_added(
    rid: str, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
) -> Event:
    return _part_event("response.content_part.added", rid, item_id, output_index, content_index, part=part)


def content_part_done(
    rid: str, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
) -> Event:
    return _part_event("response.content_part.done", rid, item_id, output_index, content_index, part=part)


def output_audio_delta(
    rid: str, item_id: str, output_index: int, content_index: int, delta_b64: str
) -> Event:
    return _part_event(
        "response.output_audio.delta", rid, item_id, output_index, content_index, delta=delta_b64
    )


def output_audio_done(rid: str, item_id: str, output_index: int, content_index: int) -> Event:
    return _part_event("response.output_audio.done", rid, item_id, output_index, content_index)


def output_audio_transcript_delta(
    rid: str, item_id: str, output_index: int, content_index: int, delta: str
) -> Event:
    return _part_event(
        "response.output_audio_transcript.delta", rid, item_id, output_index, content_index, delta=delta
    )


def output_audio_transcript_done(
    rid: str, item_id: str, output_index: int, content_index: int, transcript: str
) -> Event:
    return _part_event(
        "response.output_audio_transcript.done",
        rid,
        item_id,
        output_index,
        content_index,
        transcript=transcript,
    )


def function_call_arguments_delta(
    rid: str, item_id: str, output_index: int, call_id: str, delta: str
) -> Event:
    return _event(
        "response.function_call_arguments.delta",
        response_id=rid,
        item_id=item_id,
        output_index=output_index,
        call_id=call_id,
        delta=delta,
    )


def function_call_arguments_done(
    rid: str, item_id: str, output_index: int, call_id: str, name: str, arguments: str
) -> Event:
    return _event(
        "response.function_call_arguments.done",
        response_id=rid,
        item_id=item_id,
        output_index=output_index,
        call_id=call_id,
        name=name,
        arguments=arguments,
    )


def output_text_delta(rid: str, item_id: str, output_index: int, content_index: int, delta: str) -> Event:
    return _part_event("response.output_text.delta", rid, item_id, output_index, content_index, delta=delta)


def output_text_done(rid: str, item_id: str, output_index: int, content_index: int, text: str) -> Event:
    return _part_event("response.output_text.done", rid, item_id, output_index, content_index, text=text)


# --- Parley's own (namespaced, ignored by stock clients) -------------------------------------------------------


def parley_timing(response_id: str, **marks_ms: float) -> Event:
    """Server-side stage timings of one response (``*_ms`` fields), sent just before its ``response.done``."""
    return _event("parley.timing", response_id=response_id, **{k: round(v, 1) for k, v in marks_ms.items()})


def parley_pause_transcript(item_id: str, text: str) -> Event:
    """The transcript of the speech so far, made at the onset of a pause (the turn may be about to end): the whole
    text, unlike ``...transcription.delta``, which can only extend what was shown. The relay looks up context
    for it while the VAD still waits."""
    return _event("parley.pause_transcript", item_id=item_id, text=text)
