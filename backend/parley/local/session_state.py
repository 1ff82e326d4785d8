"""The protocol logic of one local voice session, without I/O.

``SessionState.handle(event)`` takes a parsed client event and returns what to do, in order: server events (dicts)
to send, and ``Effect``s for the runtime (``parley.local.session``) to carry out — start a transcription, start or
cancel a response. Model results come back in through ``on_transcript`` / ``on_transcript_failed`` /
``response_finished``. The VAD is pure compute and is fed here. Handlers are registered per event type with
``@_on``; a ``ParleyError`` they raise becomes one ``error`` event (the session lives on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from parley.errors import InvalidRequest, ParleyError, error_event
from parley.local.conversation import Conversation, Item, item_from_wire, new_item
from parley.local.engines import VadEvent, VadFactory, VoiceActivity
from parley.local.idle import IdleTimer
from parley.local.input_buffer import MIN_COMMIT_MS, InputBuffer
from parley.local.response_run import ResponseSpec
from parley.local.session_config import (
    OPENAI_VOICES,
    SessionConfig,
    apply_update,
    check_modalities,
    check_voice,
    defaults,
)
from parley.local.tools import update_tools
from parley.realtime import events as ce
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS, b64_to_pcm
from parley.realtime.ids import new_id

logger = logging.getLogger(__name__)

Event = dict[str, Any]
VAD_KEEP_MS = 2_000  # idle audio kept before speech, beyond the prefix padding (covers VAD detection latency)
IDLE_NOTE = "The user has said nothing for a while since your last answer. In one short sentence, invite them to go on."


@dataclass(frozen=True, slots=True)
class Transcribe:
    item_id: str
    pcm: bytes
    language: str | None
    prompt: str | None


@dataclass(frozen=True, slots=True)
class StartResponse:
    spec: ResponseSpec


@dataclass(frozen=True, slots=True)
class CancelResponse:
    reason: str  # turn_detected | client_cancelled


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    item_id: str
    start: int  # absolute byte offset


Effect = Transcribe | StartResponse | CancelResponse | SpeechBegan
Out = Event | Effect
Handler = Callable[["SessionState", Any], list[Out]]
_ROUTES: dict[str, Handler] = {}


def _on(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _ROUTES[kind] = fn
        return fn

    return register


class SessionState:
    def __init__(
        self,
        *,
        vad_factory: VadFactory,
        voices: Sequence[str] = (),
        max_append_ms: int = 10_000,
        max_buffer_s: int = 120,
        llm_max_tokens: int = 256,
        language: str | None = "en",
        model: str = "parley-local",
        stt_model: str = "whisper-1",
    ) -> None:
        self.session_id = new_id("session")
        self.conversation_id = new_id("conversation")
        self.config: SessionConfig = defaults(language=language, model=model, stt_model=stt_model)
        self.conversation = Conversation()
        self.buffer = InputBuffer(max_append_ms=max_append_ms, max_buffer_s=max_buffer_s)
        self._vad_factory = vad_factory
        self._voices = tuple(voices)
        self._llm_max_tokens = llm_max_tokens
        self._vad: VoiceActivity | None = None
        self._vad_origin = 0  # absolute byte offset where the current VAD instance started
        self.speech_item_id: str | None = None
        self.speech_start = 0
        self.active_response_id: str | None = None
        self._auto_respond: set[str] = set()
        self._idle = IdleTimer()
        self._idle_items: set[str] = set()  # committed by the idle timeout: answered even without words
        self._new_vad()

    # --- entry points -----------------------------------------------------------------------------------------

    def created(self) -> list[Out]:
        return [ev.session_created(self.config.to_wire(self.session_id))]

    def handle(self, event: Any) -> list[Out]:
        try:
            return _ROUTES[event.type](self, event)
        except ParleyError as err:
            return [error_event(err, event_id=event.event_id)]

    def on_transcript(self, item_id: str, text: str) -> list[Out]:
        auto = item_id in self._auto_respond
        idle = item_id in self._idle_items
        self._auto_respond.discard(item_id)
        self._idle_items.discard(item_id)
        if not self.conversation.has(item_id):
            return []  # deleted meanwhile
        item = self.conversation.get(item_id)
        item.transcript = text.strip()
        out: list[Out] = []
        if self.config.transcription is not None:
            out.append(ev.transcription_completed(item_id, item.transcript, _audio_s(item)))
        out.append(ev.item_done(item.to_wire(), self.conversation.previous_id(item_id)))
        if auto and self.active_response_id is None and (item.transcript or idle):
            out += self._start_response(
                None, event_id=None, trigger=item_id, idle=idle and not item.transcript
            )
        elif auto and not item.transcript:
            logger.info("no words heard in %s: not answering", item_id)
        elif auto:
            logger.info("a response is already running: not answering %s automatically", item_id)
        return out

    def on_transcript_failed(self, item_id: str, err: ParleyError) -> list[Out]:
        self._auto_respond.discard(item_id)
        if not self.conversation.has(item_id):
            return []
        item = self.conversation.get(item_id)
        item.transcript = ""
        body = {"type": err.type, "code": err.code, "message": err.message, "param": None}
        return [ev.transcription_failed(item_id, body), error_event(err), ev.item_done(item.to_wire(), None)]

    def speech_paused(self) -> bool:
        """Speech is in progress but the VAD's latest frame was below threshold: the user may have finished."""
        td = self.config.turn_detection
        vad = self._vad
        return (
            self.speech_item_id is not None
            and td is not None
            and vad is not None
            and vad.last_prob < td.threshold
        )

    def response_audio_started(self, response_id: str) -> None:
        if self.active_response_id == response_id:
            self._idle.audio_started(self.buffer.end)

    def response_finished(self, response_id: str, audio_ms: int = 0) -> None:
        if self.active_response_id == response_id:
            self.active_response_id = None
            self._idle.answer_ended(self.buffer.end, audio_ms)

    def _idle_timeout(self) -> list[Out]:
        """The user said nothing for ``idle_timeout_ms`` after the last answer was played: commit the silence and
        answer (``parley.local.idle``)."""
        td = self.config.turn_detection
        if td is None or self.speech_item_id is not None or self.active_response_id is not None:
            return []
        since = self._idle.due(self.buffer.end, td.idle_timeout_ms)
        if since is None:
            return []
        self._idle.stop()
        item_id = new_id("item")
        logger.info("idle for %d ms: answering without words", td.idle_timeout_ms)
        out: list[Out] = [ev.timeout_triggered(item_id, since // BYTES_PER_MS, self.buffer.end_ms)]
        if td.create_response:
            self._idle_items.add(item_id)
        return out + self._commit(item_id, since, self.buffer.end, auto=td.create_response)

    # --- VAD --------------------------------------------------------------------------------------------------

    def _new_vad(self) -> None:
        td = self.config.turn_detection
        self._vad = self._vad_factory(td.vad_params()) if td else None
        self._vad_origin = self.buffer.end
        self.speech_item_id = None

    def _vad_event(self, e: VadEvent) -> list[Out]:
        pos = self._vad_origin + e.audio_ms * BYTES_PER_MS
        td = self.config.turn_detection
        if e.kind == "start" and self.speech_item_id is None and td is not None:
            self._idle.stop()
            self.speech_item_id = new_id("item")
            self.speech_start = max(pos, self.buffer.start)
            out: list[Out] = [
                ev.speech_started(self.speech_item_id, self.speech_start // BYTES_PER_MS),
                SpeechBegan(self.speech_item_id, self.speech_start),
            ]
            if td.interrupt_response and self.active_response_id is not None:
                out.append(CancelResponse("turn_detected"))
            return out
        if e.kind == "stop" and self.speech_item_id is not None and td is not None:
            return self._speech_end(pos, auto=td.create_response)
        return []

    def _speech_end(self, end: int, *, auto: bool) -> list[Out]:
        item_id, self.speech_item_id = self.speech_item_id, None
        assert item_id is not None
        out: list[Out] = [ev.speech_stopped(item_id, end // BYTES_PER_MS)]
        return out + self._commit(item_id, self.speech_start, end, auto=auto)

    def _commit(self, item_id: str, start: int, end: int, *, auto: bool) -> list[Out]:
        pcm = self.buffer.take(start, end)
        self.buffer.drop_before(end)
        item = new_item("user", "audio", item_id=item_id)
        item.audio_ms = len(pcm) // BYTES_PER_MS
        prev = self.conversation.insert(item)
        if auto:
            self._auto_respond.add(item_id)
        tx = self.config.transcription
        return [
            ev.input_audio_buffer_committed(item_id, prev),
            ev.item_added(item.to_wire(), prev),
            Transcribe(item_id, pcm, tx.language if tx else None, tx.prompt if tx else None),
        ]

    # --- responses --------------------------------------------------------------------------------------------

    def _start_response(
        self,
        params: ce.ResponseParams | None,
        *,
        event_id: str | None,
        trigger: str | None = None,
        idle: bool = False,
    ) -> list[Out]:
        spec = self.response_spec(params, event_id=event_id, trigger=trigger)
        if idle:
            spec = replace(spec, instructions=f"{spec.instructions}\n\n{IDLE_NOTE}".strip())
        self.active_response_id = spec.id
        self._idle.stop()
        return [StartResponse(spec)]

    def response_spec(
        self,
        params: ce.ResponseParams | None = None,
        *,
        event_id: str | None = None,
        trigger: str | None = None,
    ) -> ResponseSpec:
        """The response that ``params`` (None: an automatic one after a turn) would run now. No side effects."""
        cfg = self.config
        p = params or ce.ResponseParams()
        sent = p.model_fields_set
        modalities = cfg.output_modalities
        if p.output_modalities is not None:
            modalities = check_modalities(p.output_modalities, "response.output_modalities")
        voice = cfg.voice
        if p.audio and p.audio.output and p.audio.output.voice is not None:
            voice = check_voice(p.audio.output.voice, self._voices, "response.audio.output.voice")
        max_out = (
            p.max_output_tokens
            if "max_output_tokens" in sent and p.max_output_tokens
            else cfg.max_output_tokens
        )
        if p.conversation not in (None, "auto", "none"):
            raise InvalidRequest(
                "conversation must be 'auto' or 'none'.", code="invalid_value", param="response.conversation"
            )
        if "prompt" in sent and p.prompt is not None:
            raise InvalidRequest(
                "Stored prompts are not supported by the local voice server; send instructions instead.",
                code="invalid_value",
                param="response.prompt",
            )
        tools = update_tools(cfg.tools, p.tools, p.tool_choice, sent=sent, prefix="response.")
        inputs = tuple(self._input_item(i, f"response.input.{n}") for n, i in enumerate(p.input or []))
        return ResponseSpec(
            id=new_id("response"),
            instructions=p.instructions if p.instructions is not None else cfg.instructions,
            modalities=modalities,
            voice=voice,
            tts_voice=None if voice in OPENAI_VOICES else voice,
            max_tokens=self._llm_max_tokens if max_out == "inf" else int(max_out),
            max_output_tokens=max_out,
            conversation_id=None if p.conversation == "none" else self.conversation_id,
            input_items=inputs if p.input is not None else None,
            metadata=p.metadata,
            event_id=event_id,
            trigger_item_id=trigger,
            tools=tools,
            speed=cfg.speed,
        )

    def _input_item(self, raw: Any, param: str) -> Item:
        if isinstance(raw, ce.ItemReference):
            return self.conversation.get(raw.id, param=f"{param}.id")
        return item_from_wire(raw, param)[0]


# --- handlers, per namespace ------------------------------------------------------------------------------------


@_on("session.update")
def _session_update(s: SessionState, e: ce.SessionUpdate) -> list[Out]:
    old_td = s.config.turn_detection
    s.config = apply_update(s.config, e.session, voices=s._voices)
    if s.config.turn_detection != old_td:
        s._new_vad()  # new parameters (or manual mode): a fresh detector from here on
    return [ev.session_updated(s.config.to_wire(s.session_id))]


@_on("input_audio_buffer.append")
def _append(s: SessionState, e: ce.InputAudioBufferAppend) -> list[Out]:
    try:
        pcm = b64_to_pcm(e.audio)
    except ValueError:
        raise InvalidRequest("audio is not valid base64.", code="invalid_value", param="audio") from None
    vad_on = s._vad is not None
    s.buffer.check_append(pcm, enforce_total=not vad_on)
    s.buffer.append(pcm)
    if s._vad is None:
        return []
    out: list[Out] = []
    for vad_event in s._vad.feed(pcm):
        out += s._vad_event(vad_event)
    out += s._idle_timeout()
    if s.speech_item_id is None:
        td = s.config.turn_detection
        s.buffer.keep_last((td.prefix_padding_ms if td else 0) + VAD_KEEP_MS)
    elif s.buffer.end - s.speech_start > s.buffer.max_buffer_bytes:
        logger.info("speech longer than the buffer cap: ending the turn at %d ms", s.buffer.end_ms)
        out += s._speech_end(
            s.buffer.end, auto=bool(s.config.turn_detection and s.config.turn_detection.create_response)
        )
        s._new_vad()
    return out


@_on("input_audio_buffer.commit")
def _commit(s: SessionState, e: ce.InputAudioBufferCommit) -> list[Out]:
    start = s.speech_start if s.speech_item_id is not None else s.buffer.start
    if (s.buffer.end - start) // BYTES_PER_MS < MIN_COMMIT_MS:
        raise InvalidRequest(
            f"Cannot commit: the input audio buffer holds less than {MIN_COMMIT_MS} ms of audio.",
            code="input_audio_buffer_commit_empty",
        )
    item_id = s.speech_item_id or new_id("item")
    s._idle.stop()
    s._new_vad()  # a manual commit ends any speech in progress
    return s._commit(item_id, start, s.buffer.end, auto=False)


@_on("input_audio_buffer.clear")
def _clear(s: SessionState, e: ce.InputAudioBufferClear) -> list[Out]:
    s.buffer.clear()
    s._new_vad()
    return [ev.input_audio_buffer_cleared()]


@_on("output_audio_buffer.clear")
def _output_clear(s: SessionState, e: ce.OutputAudioBufferClear) -> list[Out]:
    raise InvalidRequest(
        "output_audio_buffer.clear is WebRTC-only; over WebSocket the client stops its own playback "
        "(then sends conversation.item.truncate).",
        code="unsupported_event",
        param="type",
    )


@_on("conversation.item.create")
def _item_create(s: SessionState, e: ce.ConversationItemCreate) -> list[Out]:
    item, pcm = item_from_wire(e.item, "item")
    prev = s.conversation.insert(item, e.previous_item_id)
    out: list[Out] = [ev.item_added(item.to_wire(), prev)]
    if pcm is not None:
        tx = s.config.transcription
        out.append(Transcribe(item.id, pcm, tx.language if tx else None, tx.prompt if tx else None))
    else:
        out.append(ev.item_done(item.to_wire(), prev))
    return out


@_on("conversation.item.delete")
def _item_delete(s: SessionState, e: ce.ConversationItemDelete) -> list[Out]:
    s.conversation.delete(e.item_id)
    return [ev.item_deleted(e.item_id)]


@_on("conversation.item.retrieve")
def _item_retrieve(s: SessionState, e: ce.ConversationItemRetrieve) -> list[Out]:
    return [ev.item_retrieved(s.conversation.get(e.item_id).to_wire())]


@_on("conversation.item.truncate")
def _item_truncate(s: SessionState, e: ce.ConversationItemTruncate) -> list[Out]:
    item = s.conversation.get(e.item_id)
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


@_on("response.create")
def _response_create(s: SessionState, e: ce.ResponseCreate) -> list[Out]:
    if s.active_response_id is not None:
        raise InvalidRequest(
            f"Conversation already has an active response in progress: {s.active_response_id}. "
            "Wait for it to finish (response.done) or cancel it first.",
            code="conversation_already_has_active_response",
        )
    return s._start_response(e.response, event_id=e.event_id)


@_on("response.cancel")
def _response_cancel(s: SessionState, e: ce.ResponseCancel) -> list[Out]:
    active = s.active_response_id
    if active is None or (e.response_id is not None and e.response_id != active):
        raise InvalidRequest(
            "Cancellation failed: no active response found.", code="response_cancel_not_active"
        )
    return [CancelResponse("client_cancelled")]


# --- helpers ----------------------------------------------------------------------------------------------------


def _audio_s(item: Item) -> float:
    return item.audio_ms / 1000.0
