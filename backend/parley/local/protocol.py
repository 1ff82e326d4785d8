"""The protocol of one local voice session, without I/O: the one owner of the session's and the turn's state.

``LocalProtocol`` takes what happens and returns what to do, in order (``parley.local.effects``): server events
(dicts) to send and effects for the connection (``parley.local.connection``) to carry out. What happens is a client
frame (``receive``; ``handle`` for a parsed event), an engine's result (``on_transcribed``, ``on_llm``,
``on_audio``, ... tagged with the id its effect gave) or the clock (``tick``, due at ``next_deadline()``). It
decides everything: the turn (``parley.local.turn``: VAD edges, pauses, partial and final transcripts), the early
answer started in the user's pause (``parley.local.speculation``), the response (``parley.local.responses``) and
the idle timeout (``parley.local.idle``). Client events are handled per namespace in ``parley.local.handlers``.

Preemption, end to end: a pause-onset transcript gives the turn its ``words``; the protocol plans the response the
turn would get now and speculates on it (a client that answers turns itself, ``create_response=false`` like the
relay, first gets ``preemptive_client_grace_ms`` to add context for those words, which it receives as
``parley.pause_transcript``). Until the turn is answered, every change of the conversation or the session re-plans
(debounced by ``REPLAN_DEBOUNCE_S``, so a delete and a create make one re-plan), which keeps or replaces the
speculation; speech resuming, new speech, or final words that differ discard it. When the response's request is
known (its input transcripts are in) it adopts the speculation if the plans are equal.

The VAD is pure compute and is fed here. Time comes from ``clock`` (monotonic seconds; tests pass a fake one).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Concatenate, ParamSpec

from parley.errors import InvalidRequest, ParleyError, STTFailed, error_event
from parley.local import handlers
from parley.local.conversation import Conversation, new_item
from parley.local.effects import Event, Generate, Out, StopGenerating, Transcribe
from parley.local.engines import LLMChunk, VadEvent, VadFactory, VoiceActivity
from parley.local.idle import IdleTimer
from parley.local.input_buffer import InputBuffer
from parley.local.plan import Plan
from parley.local.response_run import ResponseRun, ResponseSpec, Status
from parley.local.responses import Response, ResponsePhase, build_spec
from parley.local.session_config import SessionConfig, defaults
from parley.local.speculation import Speculations
from parley.local.turn import MIN_PARTIAL_MS, Partial, Turn, TurnPhase
from parley.realtime import events as ce
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS
from parley.realtime.events import event_id_of, parse_client_event
from parley.realtime.ids import new_id

logger = logging.getLogger(__name__)

VAD_KEEP_MS = 2_000  # idle audio kept before speech, beyond the prefix padding (covers VAD detection latency)
REPLAN_DEBOUNCE_S = 0.01
IDLE_NOTE = "The user has said nothing for a while since your last answer. In one short sentence, invite them to go on."
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class ProtocolOptions:
    """The settings the protocol reads (``from_settings``), with the server's defaults."""

    max_event_bytes: int = 1 << 20
    max_append_ms: int = 10_000
    max_buffer_s: int = 120
    llm_max_tokens: int = 256
    language: str | None = "en"
    partial_interval_ms: int = 0
    preemptive_generation: bool = True
    client_grace_ms: int = 0
    parley_events: bool = True  # False: a strict GA client, Parley's own parley.* events are not sent

    @classmethod
    def from_settings(cls, settings: Any, *, parley_events: bool = True) -> ProtocolOptions:
        return cls(
            max_event_bytes=settings.max_event_bytes,
            max_append_ms=settings.max_append_audio_ms,
            max_buffer_s=settings.max_buffer_audio_s,
            llm_max_tokens=settings.llm_max_tokens,
            language=settings.stt_language,
            partial_interval_ms=settings.stt_partial_interval_ms,
            preemptive_generation=settings.preemptive_generation,
            client_grace_ms=settings.preemptive_client_grace_ms,
            parley_events=parley_events,
        )


@dataclass(frozen=True, slots=True)
class _Job:
    item_id: str
    partial: Partial | None  # None: the final transcript of a committed item


def _step(
    method: Callable[Concatenate[LocalProtocol, P], list[Out]],
) -> Callable[Concatenate[LocalProtocol, P], list[Out]]:
    """An entry point: what it returns leaves without Parley's own events for a strict GA client."""

    @functools.wraps(method)
    def wrapper(self: LocalProtocol, *args: P.args, **kwargs: P.kwargs) -> list[Out]:
        out = method(self, *args, **kwargs)
        if self.options.parley_events:
            return out
        return [o for o in out if not (isinstance(o, dict) and o["type"].startswith("parley."))]

    return wrapper


class LocalProtocol:
    def __init__(
        self,
        *,
        vad_factory: VadFactory,
        voices: Sequence[str] = (),
        options: ProtocolOptions | None = None,
        model: str = "parley-local",
        stt_model: str = "whisper-1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = o = options or ProtocolOptions()
        self._clock = clock
        self.session_id = new_id("session")
        self.conversation_id = new_id("conversation")
        self.config: SessionConfig = defaults(language=o.language, model=model, stt_model=stt_model)
        self.conversation = Conversation()
        self.buffer = InputBuffer(max_append_ms=o.max_append_ms, max_buffer_s=o.max_buffer_s)
        self.voices = tuple(voices)
        self.turn: Turn | None = None
        self.speculations = Speculations()
        self.response: Response | None = None
        self._vad_factory = vad_factory
        self._vad: VoiceActivity | None = None
        self._vad_origin = 0  # absolute byte offset where the current VAD instance started
        self._idle = IdleTimer()
        self._auto_respond: set[str] = set()  # committed by the VAD: answered when their transcript is in
        self._idle_items: set[str] = set()  # committed by the idle timeout: answered even without words
        self._jobs: dict[int, _Job] = {}
        self._job_ids = itertools.count(1)
        self._pending: set[str] = set()  # items whose final transcript is not in yet
        self._finals_on: dict[
            int, tuple[str, bytes]
        ] = {}  # running partial -> the final (item, audio) it serves
        self._replan_at: float | None = None
        self.new_vad()

    # --- entry points -----------------------------------------------------------------------------------------

    @_step
    def created(self) -> list[Out]:
        return [ev.session_created(self.config.to_wire(self.session_id))]

    @_step
    def receive(self, raw: str | bytes) -> list[Out]:
        """A client frame: size limit, parse, handle. A bug in a handler becomes one ``error`` (the session lives
        on)."""
        limit = self.options.max_event_bytes
        if len(raw) > limit:
            err = InvalidRequest(
                f"Event of {len(raw)} bytes exceeds the limit of {limit} bytes.", code="event_too_large"
            )
            return [error_event(err)]
        try:
            event = parse_client_event(raw)
        except InvalidRequest as err:
            return [error_event(err, event_id=event_id_of(raw))]
        out: list[Out] = []
        try:
            if event.type == "response.create":
                out += (
                    self._replan_now()
                )  # a re-plan still waiting must be in place for the response to adopt
            out += self.handle(event)
        except Exception as exc:
            logger.exception("handling %s failed", event.type)
            out.append(error_event(exc, event_id=event.event_id))
        if event.type != "input_audio_buffer.append":
            self._replan_at = (
                self._clock() + REPLAN_DEBOUNCE_S
            )  # the conversation or session may have changed
        return out

    def handle(self, event: Any) -> list[Out]:
        """A parsed client event. A ``ParleyError`` becomes one ``error`` event."""
        try:
            return handlers.ROUTES[event.type](self, event)
        except ParleyError as err:
            return [error_event(err, event_id=event.event_id)]

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do (clock seconds), or None."""
        times = [self._replan_at]
        if self.turn is not None and self.turn.speaking:
            times.append(self.turn.due)
        if self.response is not None:
            times.append(self.response.deadline)
        return min((t for t in times if t is not None), default=None)

    @_step
    def tick(self) -> list[Out]:
        now = self._clock()
        out: list[Out] = []
        if self._replan_at is not None and now >= self._replan_at:
            out += self._replan_now()
        turn = self.turn
        interval = self.options.partial_interval_ms / 1000.0
        if turn is not None and turn.speaking and turn.periodic_due(now, interval):
            out += self._start_partial(turn)
        r = self.response
        if r is not None and r.deadline is not None and now >= r.deadline:
            failure = ParleyError("the input transcripts did not come in time", code="transcription_failed")
            out += self._finish(r, "failed", failure=failure)
        return out

    @_step
    def on_transcribed(self, job: int, text: str) -> list[Out]:
        j = self._jobs.pop(job, None)
        if j is None:
            return []
        if j.partial is not None:
            return self._partial_done(j.item_id, j.partial, text)
        return self._final_done(j.item_id, text)

    @_step
    def on_transcribe_failed(self, job: int, exc: BaseException) -> list[Out]:
        j = self._jobs.pop(job, None)
        if j is None:
            return []
        if j.partial is not None:
            logger.info("partial transcription failed: %r", exc)
            return self._partial_done(j.item_id, j.partial, None)
        if isinstance(exc, ParleyError):
            logger.warning("transcription of %s failed: %s", j.item_id, exc.message)
            return self._final_failed(j.item_id, exc)
        logger.error("transcription of %s failed", j.item_id, exc_info=exc)
        return self._final_failed(j.item_id, STTFailed(f"transcription failed: {exc}"))

    def on_speculation_failed(self, guess_id: int) -> list[Out]:
        self.speculations.failed(guess_id)
        return []

    @_step
    def on_llm(self, response_id: str, chunk: LLMChunk) -> list[Out]:
        r = self._generating(response_id)
        return list(r.take(chunk, self._clock())) if r is not None else []

    def on_phrase(self, response_id: str, text: str) -> list[Out]:
        r = self._generating(response_id)
        if r is not None:
            r.run.begin_phrase(text)
        return []

    @_step
    def on_audio(self, response_id: str, pcm: bytes) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        events, first = r.audio(pcm, self._clock())
        if first:
            self._idle.audio_started(self.buffer.end)  # the idle timeout counts from where it stops playing
        return list(events)

    @_step
    def on_phrase_end(self, response_id: str) -> list[Out]:
        r = self._generating(response_id)
        return list(r.run.end_phrase()) if r is not None else []

    @_step
    def on_generated(self, response_id: str) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        if r.run.hit_token_cap():
            return self._finish(r, "incomplete", reason="max_output_tokens")
        return self._finish(r, "completed")

    @_step
    def on_generation_failed(self, response_id: str, exc: BaseException) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        if isinstance(exc, ParleyError):
            logger.warning("response %s failed: %s", response_id, exc.message)
            return self._finish(r, "failed", failure=exc)
        logger.error("response %s failed", response_id, exc_info=exc)
        return self._finish(r, "failed", failure=ParleyError(f"internal error: {type(exc).__name__}"))

    # --- speech: VAD, pauses, commits -------------------------------------------------------------------------

    @property
    def speech(self) -> Turn | None:
        """The turn whose speech is in progress."""
        return self.turn if self.turn is not None and self.turn.speaking else None

    @property
    def vad_on(self) -> bool:
        return self._vad is not None

    def new_vad(self) -> None:
        """A fresh detector from here on (new parameters, manual mode, a commit or clear): any speech it was
        following is over for it."""
        td = self.config.turn_detection
        self._vad = self._vad_factory(td.vad_params()) if td else None
        self._vad_origin = self.buffer.end

    def audio_in(self, pcm: bytes) -> list[Out]:
        """Appended audio (already checked and in the buffer) through the VAD: edges, pauses, the idle timeout."""
        if self._vad is None:
            return []
        out: list[Out] = []
        for vad_event in self._vad.feed(pcm):
            out += self._vad_event(vad_event)
        out += self._idle_timeout()
        td = self.config.turn_detection
        turn = self.speech
        if turn is None:
            self.buffer.keep_last((td.prefix_padding_ms if td else 0) + VAD_KEEP_MS)
        elif self.buffer.end - turn.start > self.buffer.max_buffer_bytes:
            logger.info("speech longer than the buffer cap: ending the turn at %d ms", self.buffer.end_ms)
            out += self._speech_end(self.buffer.end, auto=bool(td and td.create_response))
            self.new_vad()
        return out + self._watch_pause()

    def _vad_event(self, e: VadEvent) -> list[Out]:
        pos = self._vad_origin + e.audio_ms * BYTES_PER_MS
        td = self.config.turn_detection
        if td is None:
            return []
        if e.kind == "start" and self.speech is None:
            barge_in = self._cancel("turn_detected") if td.interrupt_response else []
            self._idle.stop()
            dropped = self._drop_turn("new speech")
            turn = Turn(new_id("item"), max(pos, self.buffer.start))
            if self.options.partial_interval_ms > 0:
                turn.due = self._clock() + self.options.partial_interval_ms / 1000.0
            self.turn = turn
            return [ev.speech_started(turn.item_id, turn.start // BYTES_PER_MS), *dropped, *barge_in]
        if e.kind == "stop" and self.speech is not None:
            return self._speech_end(pos, auto=td.create_response)
        return []

    def _watch_pause(self) -> list[Out]:
        """After each append: the onset of a pause (transcribe the speech so far) or speech resuming."""
        turn, td, vad = self.speech, self.config.turn_detection, self._vad
        if turn is None or td is None or vad is None:
            return []
        if vad.last_prob < td.threshold:
            if turn.phase is TurnPhase.SPEAKING:
                logger.debug("pause %d of %s at %d ms", turn.pauses + 1, turn.item_id, self.buffer.end_ms)
                if turn.enter_pause():
                    return self._start_partial(turn)
            return []
        if turn.phase is TurnPhase.PAUSED:
            turn.resume()
            return list(self.speculations.discard(turn.item_id, reason="speech resumed"))
        return []

    def _speech_end(self, end: int, *, auto: bool) -> list[Out]:
        turn = self.speech
        assert turn is not None
        turn.stopped_at = self._clock()
        out: list[Out] = [ev.speech_stopped(turn.item_id, end // BYTES_PER_MS)]
        return out + self.commit(turn.item_id, turn.start, end, auto=auto)

    def commit(self, item_id: str, start: int, end: int, *, auto: bool) -> list[Out]:
        """The input audio from ``start`` to ``end`` becomes user item ``item_id``; its transcript is started, or
        taken from the turn's partial that covers it. ``auto``: answered when the transcript is in."""
        pcm = self.buffer.take(start, end)
        self.buffer.drop_before(end)
        item = new_item("user", "audio", item_id=item_id)
        item.audio_ms = len(pcm) // BYTES_PER_MS
        prev = self.conversation.insert(item)
        if auto:
            self._auto_respond.add(item_id)
        out: list[Out] = [ev.input_audio_buffer_committed(item_id, prev), ev.item_added(item.to_wire(), prev)]
        turn = self.speech
        if turn is None or turn.item_id != item_id:
            return [*out, self.transcription(item_id, pcm)]
        turn.commit()
        reuse = turn.reusable(start + len(pcm))
        if isinstance(reuse, str):
            logger.info("final transcript of %s: reused a finished partial", item_id)
            return out + self._final_done(item_id, reuse)
        if isinstance(reuse, Partial):
            logger.info("final transcript of %s: awaits the running partial", item_id)
            self._pending.add(item_id)
            self._finals_on[reuse.job] = (item_id, pcm)
            return out
        logger.info("final transcript of %s: no partial covers it", item_id)
        return [*out, self.transcription(item_id, pcm)]

    def transcription(self, item_id: str, pcm: bytes) -> Transcribe:
        """The final transcript of item ``item_id`` (pending until it is in)."""
        self._pending.add(item_id)
        return self._transcribe(item_id, pcm, None)

    def _transcribe(self, item_id: str, pcm: bytes, partial: Partial | None) -> Transcribe:
        n = partial.job if partial is not None else next(self._job_ids)
        self._jobs[n] = _Job(item_id, partial)
        tx = self.config.transcription
        return Transcribe(n, item_id, pcm, tx.language if tx else None, tx.prompt if tx else None)

    def _idle_timeout(self) -> list[Out]:
        """The user said nothing for ``idle_timeout_ms`` after the last answer was played: commit the silence and
        answer (``parley.local.idle``)."""
        td = self.config.turn_detection
        if td is None or self.speech is not None or self.response is not None:
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
        return out + self.commit(item_id, since, self.buffer.end, auto=td.create_response)

    def stop_counting_idle(self) -> None:
        self._idle.stop()

    # --- transcripts ------------------------------------------------------------------------------------------

    def _start_partial(self, turn: Turn) -> list[Out]:
        end = self.buffer.end
        pcm = self.buffer.take(turn.start, end)
        if len(pcm) < MIN_PARTIAL_MS * BYTES_PER_MS:
            turn.kick = False
            self._rearm(turn)
            return []
        partial = Partial(next(self._job_ids), end, turn.pause)
        turn.started(partial)
        return [self._transcribe(turn.item_id, pcm, partial)]

    def _rearm(self, turn: Turn) -> None:
        if self.options.partial_interval_ms > 0 and turn.speaking:
            turn.due = self._clock() + self.options.partial_interval_ms / 1000.0

    def _partial_done(self, item_id: str, partial: Partial, text: str | None) -> list[Out]:
        turn = self.turn if self.turn is not None and self.turn.item_id == item_id else None
        out: list[Out] = []
        if turn is not None:
            in_this_pause = turn.finished(partial, text)
            words = (text or "").strip()
            if in_this_pause:
                out += self._pause_words(turn, words)
                if self.config.transcription is not None and words:
                    out.append(ev.parley_pause_transcript(item_id, words))
            delta = turn.delta(words) if self.config.transcription is not None else None
            if delta is not None:
                out.append(ev.transcription_delta(item_id, delta))
        final = self._finals_on.pop(partial.job, None)
        if final is not None:
            if text is not None:
                out += self._final_done(item_id, text)
            else:
                out.append(self.transcription(*final))
        if turn is not None and turn.speaking:
            out += self._start_partial(turn) if turn.kick else []
            if turn.inflight is None and turn.due is None:
                self._rearm(turn)
        return out

    def _final_done(self, item_id: str, text: str) -> list[Out]:
        self._pending.discard(item_id)
        auto = item_id in self._auto_respond
        idle = item_id in self._idle_items
        self._auto_respond.discard(item_id)
        self._idle_items.discard(item_id)
        out: list[Out] = []
        started = False
        if self.conversation.has(item_id):
            item = self.conversation.get(item_id)
            item.transcript = text.strip()
            if self.config.transcription is not None:
                audio_s = item.audio_ms / 1000.0
                out.append(ev.transcription_completed(item_id, item.transcript, audio_s))
            out.append(ev.item_done(item.to_wire(), self.conversation.previous_id(item_id)))
            if auto and self.response is None and (item.transcript or idle):
                out += self.start_response(
                    None, event_id=None, trigger=item_id, idle=idle and not item.transcript
                )
                started = True
            elif auto and not item.transcript:
                logger.info("no words heard in %s: not answering", item_id)
            elif auto:
                logger.info("a response is already running: not answering %s automatically", item_id)
        return out + self._after_final(item_id, text, answered=started)

    def _final_failed(self, item_id: str, err: ParleyError) -> list[Out]:
        self._pending.discard(item_id)
        self._auto_respond.discard(item_id)
        self._idle_items.discard(item_id)
        out: list[Out] = []
        if self.conversation.has(item_id):
            item = self.conversation.get(item_id)
            item.transcript = ""
            body = {"type": err.type, "code": err.code, "message": err.message, "param": None}
            out += [
                ev.transcription_failed(item_id, body),
                error_event(err),
                ev.item_done(item.to_wire(), None),
            ]
        return out + self._after_final(item_id, "", answered=False)

    def _after_final(self, item_id: str, text: str, *, answered: bool) -> list[Out]:
        """A final transcript is in (or failed, as ""): settle the speculation, and the response that waited."""
        td = self.config.turn_detection
        out: list[Out] = []
        if td is not None and not td.create_response:
            # The client answers the turn itself (the relay, after injecting context): keep a speculation made
            # from these exact words for its response.create; the adoption checks the whole request then.
            out += self.speculations.keep_if_words(item_id, text)
        elif not answered:
            out += self._forget(item_id, "no automatic response")
        r = self.response
        if r is not None and r.phase is ResponsePhase.AWAITING_TRANSCRIPTS and item_id in r.waiting:
            r.waiting.discard(item_id)
            if not r.waiting:
                out += self._generate(r)
        return out + self._speculate()  # another item's transcript changes the request

    # --- the early answer -------------------------------------------------------------------------------------

    def _pause_words(self, turn: Turn, words: str) -> list[Out]:
        """A transcript of the speech so far, made while the user still pauses: speculate on the answer it would
        get. A client that answers turns itself first gets ``client_grace_ms`` to add context for these words (a
        speculation started without it would be replaced at once, and llama.cpp finishes reading a cancelled
        request's prompt before the next)."""
        if not self.options.preemptive_generation or not words or turn.phase is TurnPhase.ANSWERED:
            return []
        turn.words = words
        td = self.config.turn_detection
        grace = self.options.client_grace_ms / 1000.0
        if td is not None and not td.create_response and grace > 0:
            self._replan_at = self._clock() + grace
            return []
        return self._speculate()

    def _replan_now(self) -> list[Out]:
        if self._replan_at is None:
            return []
        self._replan_at = None
        return self._speculate()

    def _speculate(self) -> list[Out]:
        """Speculate on the turn's words with the request the turn would make now; the speculation is kept if its
        plan is unchanged, replaced if not."""
        turn = self.turn
        if turn is None or turn.words is None or self.response is not None:
            return []  # nothing to answer, or a response runs (this turn is not answered automatically then)
        words, conv = turn.words, self.conversation
        spec = self.response_spec(trigger=turn.item_id)
        if turn.phase is TurnPhase.PAUSED:
            # Pausing: the turn's user item will be appended at the end when it is committed.
            messages = [*conv.llm_messages(spec.instructions), {"role": "user", "content": words}]
        elif turn.phase is TurnPhase.COMMITTED and self._unanswered(turn.item_id, words):
            # Committed (maybe before context items): the words stand in for its transcript, in its place.
            messages = conv.llm_messages(spec.instructions, pending={turn.item_id: words})
        else:
            return self._forget(turn.item_id, "turn over")
        return list(self.speculations.start(turn.item_id, words, Plan.of(spec, messages), self._clock()))

    def _unanswered(self, item_id: str, words: str) -> bool:
        """The committed turn ``item_id`` may still be answered from ``words``: its transcript is pending or these
        words, and only system items (context) came after it."""
        conv = self.conversation
        if not conv.has(item_id) or conv.get(item_id).transcript not in (None, words):
            return False
        return all(item.role == "system" for item in conv.items_after(item_id))

    def _forget(self, item_id: str, reason: str) -> list[Out]:
        """The turn ``item_id`` will not be answered from its words: drop them and their speculation."""
        if self.turn is not None and self.turn.item_id == item_id:
            self.turn.words = None
        return list(self.speculations.discard(item_id, reason=reason))

    def _drop_turn(self, reason: str) -> list[Out]:
        """New speech: the previous turn is over for the early answer."""
        if self.turn is not None:
            self.turn.words = None
        return list(self.speculations.discard(reason=reason))

    def drop_speech(self) -> list[Out]:
        """The detector was replaced while the user spoke (cleared buffer, new VAD parameters): that speech ends
        without a commit."""
        if self.speech is None:
            return []
        self.turn = None
        return list(self.speculations.discard(reason="speech dropped"))

    # --- responses --------------------------------------------------------------------------------------------

    def response_spec(
        self,
        params: ce.ResponseParams | None = None,
        *,
        event_id: str | None = None,
        trigger: str | None = None,
    ) -> ResponseSpec:
        return build_spec(
            self.config,
            params,
            conversation=self.conversation,
            conversation_id=self.conversation_id,
            voices=self.voices,
            llm_max_tokens=self.options.llm_max_tokens,
            event_id=event_id,
            trigger=trigger,
        )

    def start_response(
        self,
        params: ce.ResponseParams | None,
        *,
        event_id: str | None,
        trigger: str | None = None,
        idle: bool = False,
    ) -> list[Out]:
        """Start a response: ``response.created`` at once; its request once its input items' transcripts are in."""
        spec = self.response_spec(params, event_id=event_id, trigger=trigger)
        if idle:
            spec = replace(spec, instructions=f"{spec.instructions}\n\n{IDLE_NOTE}".strip())
        now = self._clock()
        turn = self.turn
        stopped = turn.stopped_at if turn is not None and turn.item_id == trigger else None
        items = spec.input_items if spec.input_items is not None else tuple(self.conversation)
        waiting = {item.id for item in items if item.id in self._pending}
        r = Response(spec, ResponseRun(spec, self.conversation), now, stopped or now, waiting)
        self.response = r
        self._idle.stop()
        if turn is not None:
            turn.answered()  # its response adopts the speculation or discards it; no more re-plans
        out: list[Out] = list(r.run.start())
        return out if waiting else out + self._generate(r)

    def _generate(self, r: Response) -> list[Out]:
        spec = r.spec
        items = list(spec.input_items) if spec.input_items is not None else None
        plan = Plan.of(spec, self.conversation.llm_messages(spec.instructions, items))
        guess, out = self.speculations.adopt(spec.trigger_item_id, plan, self._clock())
        r.phase = ResponsePhase.GENERATING
        if guess is not None:
            r.marks["preemptive_start"] = guess.started
        return [*out, Generate(spec.id, plan, guess.id if guess is not None else None)]

    def _generating(self, response_id: str) -> Response | None:
        r = self.response
        ok = r is not None and r.spec.id == response_id and r.phase is ResponsePhase.GENERATING
        return r if ok else None

    def cancel(self, reason: str) -> list[Out]:
        """Cancel the active response (``turn_detected``, ``client_cancelled``): stop its generation, close it."""
        return self._cancel(reason)

    def _cancel(self, reason: str) -> list[Out]:
        r = self.response
        if r is None:
            return []
        out: list[Out] = [StopGenerating(r.spec.id)] if r.phase is ResponsePhase.GENERATING else []
        return out + self._finish(r, "cancelled", reason=reason)

    def _finish(
        self, r: Response, status: Status, *, reason: str | None = None, failure: ParleyError | None = None
    ) -> list[Out]:
        self.response = None
        self._idle.answer_ended(self.buffer.end, r.run.item.audio_ms)
        closing: list[Event] = r.run.finish(status, reason=reason, error=failure)
        if failure is not None:
            closing.insert(0, error_event(failure, event_id=r.spec.event_id))
        closing.insert(-1, ev.parley_timing(r.spec.id, **r.timings_ms()))
        logger.info("response %s %s (%s)", r.spec.id, status, reason or "")
        return list(closing)
