"""The protocol of one local voice session, without I/O: the one owner of the session's and the turn's state.

``LocalProtocol`` takes what happens and returns what to do, in order (``parley.local.effects``): server events
(dicts) to send and effects for the connection (``parley.local.connection``) to carry out. What happens is a client
frame (``receive``; ``handle`` for a parsed event), an engine's result (``on_transcribed``, ``on_llm``,
``on_audio``, ... tagged with the id its effect gave) or the clock (``tick``, due at ``next_deadline()``).

It decides everything, with pure parts it owns: the turn (``parley.local.turn``: VAD edges, pauses, partial and
final transcripts, jobs in ``parley.local.transcription``), the early answer started in the user's pause
(``parley.local.early_answer``, ``parley.local.speculation``), the response (``parley.local.responses``) and the
idle timeout (``parley.local.idle``). Client events are handled per namespace in ``parley.local.handlers``.

The VAD is pure compute and is fed here. Time comes from ``clock`` (monotonic seconds; tests pass a fake one).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec

from parley.errors import ParleyError, STTFailed, error_event
from parley.local import handlers
from parley.local.conversation import Conversation, new_item
from parley.local.early_answer import EarlyAnswer
from parley.local.effects import Out, Transcribe
from parley.local.engines import LLMChunk, VadEvent, VadFactory, VoiceActivity
from parley.local.idle import IdleTimer
from parley.local.input_buffer import InputBuffer
from parley.local.options import ProtocolOptions
from parley.local.responses import Answering, Response
from parley.local.session_config import SessionConfig, defaults
from parley.local.speculation import Speculations
from parley.local.transcription import Heard, Transcription
from parley.local.turn import MIN_PARTIAL_MS, Partial, Turn, TurnPhase
from parley.realtime import events as ce
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS
from parley.realtime.ids import new_id

logger = logging.getLogger(__name__)

VAD_KEEP_MS = 2_000  # idle audio kept before speech, beyond the prefix padding (covers VAD detection latency)
P = ParamSpec("P")


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
        stt_model: str | Callable[[str], str] = "whisper-1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = o = options or ProtocolOptions()
        self._clock = clock
        self.session_id = new_id("session")
        self.conversation_id = new_id("conversation")
        self._stt_model = stt_model if callable(stt_model) else (lambda language: stt_model)
        self.config: SessionConfig = defaults(language=o.language, model=model)
        self.conversation = Conversation()
        self.buffer = InputBuffer(max_append_ms=o.max_append_ms, max_buffer_s=o.max_buffer_s)
        self.voices = tuple(voices)
        self.turn: Turn | None = None
        self.speculations = Speculations()
        self.early = EarlyAnswer(
            self.speculations, enabled=o.preemptive_generation, client_grace_ms=o.client_grace_ms
        )
        self.transcription = Transcription()
        self._idle = IdleTimer()
        self.answering = Answering(
            self.conversation,
            self.speculations,
            self._idle,
            clock,
            conversation_id=self.conversation_id,
            voices=self.voices,
            llm_max_tokens=o.llm_max_tokens,
        )
        self._vad_factory = vad_factory
        self._vad: VoiceActivity | None = None
        self._vad_origin = 0  # absolute byte offset where the current VAD instance started
        self._auto_respond: set[str] = set()  # committed by the VAD: answered when their transcript is in
        self._idle_items: set[str] = set()  # committed by the idle timeout: answered even without words
        self.new_vad()

    # --- entry points -----------------------------------------------------------------------------------------

    @_step
    def created(self) -> list[Out]:
        return [ev.session_created(self.session_wire())]

    @_step
    def receive(self, raw: str | bytes) -> list[Out]:
        """A client frame. A bug in a handler becomes one ``error`` (the session lives on)."""
        event = handlers.decode(raw, self.options.max_event_bytes)
        if isinstance(event, dict):
            return [event]
        out: list[Out] = []
        try:
            if event.type == "response.create" and self.early.due(None):
                out += self._speculate()  # a waiting re-plan must be in place for the response to adopt
            out += self.handle(event)
        except Exception as exc:
            logger.exception("handling %s failed", event.type)
            out.append(error_event(exc, event_id=event.event_id))
        if event.type != "input_audio_buffer.append":
            self.early.changed(self._clock())
        return out

    def handle(self, event: Any) -> list[Out]:
        """A parsed client event. A ``ParleyError`` becomes one ``error`` event."""
        try:
            return handlers.ROUTES[event.type](self, event)
        except ParleyError as err:
            return [error_event(err, event_id=event.event_id)]

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do (clock seconds), or None."""
        times = [self.early.replan_at]
        if self.turn is not None and self.turn.speaking:
            times.append(self.turn.due)
        if self.response is not None:
            times.append(self.response.deadline)
        return min((t for t in times if t is not None), default=None)

    @_step
    def tick(self) -> list[Out]:
        now = self._clock()
        out = self._speculate() if self.early.due(now) else []
        turn = self.turn
        interval = self.options.partial_interval_ms / 1000.0
        if turn is not None and turn.speaking and turn.periodic_due(now, interval):
            out += self._start_partial(turn)
        return out + self.answering.tick(now, self.buffer.end)

    @_step
    def on_transcribed(self, job: int, text: str) -> list[Out]:
        return self._heard(*self.transcription.result(job, text, self.config))

    @_step
    def on_transcribe_failed(self, job: int, exc: BaseException) -> list[Out]:
        heard, retry = self.transcription.result(job, None, self.config)
        if heard is None or not heard.final:
            logger.info("partial transcription failed: %r", exc)
            return self._heard(heard, retry)
        if isinstance(exc, ParleyError):
            logger.warning("transcription of %s failed: %s", heard.item_id, exc.message)
            return self._final_failed(heard.item_id, exc)
        logger.error("transcription of %s failed", heard.item_id, exc_info=exc)
        return self._final_failed(heard.item_id, STTFailed(f"transcription failed: {exc}"))

    def on_speculation_failed(self, guess_id: int) -> list[Out]:
        self.speculations.failed(guess_id)
        return []

    @_step
    def on_llm(self, response_id: str, chunk: LLMChunk) -> list[Out]:
        return self.answering.llm(response_id, chunk)

    @_step
    def on_phrase(self, response_id: str, text: str) -> list[Out]:
        return self.answering.phrase(response_id, text)

    @_step
    def on_audio(self, response_id: str, pcm: bytes) -> list[Out]:
        return self.answering.audio(response_id, pcm, self.buffer.end)

    @_step
    def on_phrase_end(self, response_id: str) -> list[Out]:
        return self.answering.phrase_end(response_id)

    @_step
    def on_generated(self, response_id: str) -> list[Out]:
        return self.answering.generated(response_id, self.buffer.end)

    @_step
    def on_generation_failed(self, response_id: str, exc: BaseException) -> list[Out]:
        return self.answering.failed(response_id, exc, self.buffer.end)

    # --- speech: VAD edges, pauses, commits -------------------------------------------------------------------

    @property
    def speech(self) -> Turn | None:
        """The turn whose speech is in progress."""
        return self.turn if self.turn is not None and self.turn.speaking else None

    @property
    def vad_on(self) -> bool:
        return self._vad is not None

    def new_vad(self) -> None:
        """A fresh detector from here on (new parameters, manual mode, a commit or clear)."""
        td = self.config.turn_detection
        self._vad = self._vad_factory(td.vad_params()) if td else None
        self._vad_origin = self.buffer.end

    def audio_in(self, pcm: bytes) -> list[Out]:
        """Appended audio (checked, in the buffer) through the VAD: edges, pauses, the idle timeout."""
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
            barge_in = self.cancel("turn_detected") if td.interrupt_response else []
            self._idle.stop()
            if self.turn is not None:  # the previous turn is over for the early answer
                self.turn.words = None
            dropped = self.speculations.discard(reason="new speech")
            turn = Turn(new_id("item"), max(pos, self.buffer.start))
            self.turn = turn
            self._rearm(turn)
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
            return [*out, self.transcribe(item_id, pcm)]
        turn.commit()
        reuse = turn.reusable(start + len(pcm))
        if isinstance(reuse, str):
            logger.info("final transcript of %s: reused a finished partial", item_id)
            return out + self._final_done(item_id, reuse)
        if isinstance(reuse, Partial):
            logger.info("final transcript of %s: awaits the running partial", item_id)
            self.transcription.final_from(item_id, pcm, reuse)
            return out
        logger.info("final transcript of %s: no partial covers it", item_id)
        return [*out, self.transcribe(item_id, pcm)]

    def transcribe(self, item_id: str, pcm: bytes) -> Transcribe:
        """The final transcript of item ``item_id``."""
        return self.transcription.final(item_id, pcm, self.config)

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

    def session_wire(self) -> dict[str, Any]:
        """The session as ``session.created`` / ``session.updated`` show it, with the model that transcribes its
        language (a language change applies from the next turn: the request changes, so a running speculation
        is not adopted)."""
        return self.config.to_wire(self.session_id, self._stt_model(self.config.language))

    def stop_counting_idle(self) -> None:
        self._idle.stop()

    def drop_speech(self) -> list[Out]:
        """The detector is replaced while the user speaks (cleared buffer, new VAD parameters): that speech ends
        without a commit."""
        if self.speech is None:
            return []
        self.turn = None
        return list(self.speculations.discard(reason="speech dropped"))

    # --- transcripts ------------------------------------------------------------------------------------------

    def _start_partial(self, turn: Turn) -> list[Out]:
        end = self.buffer.end
        pcm = self.buffer.take(turn.start, end)
        if len(pcm) < MIN_PARTIAL_MS * BYTES_PER_MS:
            turn.kick = False
            self._rearm(turn)
            return []
        partial, job = self.transcription.partial(turn.item_id, pcm, end, turn.pause, self.config)
        turn.started(partial)
        return [job]

    def _rearm(self, turn: Turn) -> None:
        if self.options.partial_interval_ms > 0 and turn.speaking:
            turn.due = self._clock() + self.options.partial_interval_ms / 1000.0

    def _heard(self, heard: Heard | None, retry: list[Transcribe]) -> list[Out]:
        if heard is None:
            return []
        out = self._partial_done(heard.item_id, heard.partial, heard.text) if heard.partial else []
        if heard.final and heard.text is not None:
            out += self._final_done(heard.item_id, heard.text)
        return [*out, *retry]

    def _partial_done(self, item_id: str, partial: Partial, text: str | None) -> list[Out]:
        turn = self.turn
        if turn is None or turn.item_id != item_id:
            return []
        out: list[Out] = []
        in_this_pause = turn.finished(partial, text)
        words = (text or "").strip()
        tx = self.config.transcription
        if in_this_pause:
            client_answers = bool(
                self.config.turn_detection and not self.config.turn_detection.create_response
            )
            if self.early.heard(turn, words, client_answers=client_answers, now=self._clock()):
                out += self._speculate()
            if tx is not None and words:
                out.append(ev.parley_pause_transcript(item_id, words))
        delta = turn.delta(words) if tx is not None else None
        if delta is not None:
            out.append(ev.transcription_delta(item_id, delta))
        if turn.speaking and turn.kick:
            out += self._start_partial(turn)
        elif turn.speaking and turn.inflight is None:
            self._rearm(turn)
        return out

    def _final_done(self, item_id: str, text: str) -> list[Out]:
        auto, idle = item_id in self._auto_respond, item_id in self._idle_items
        self._auto_respond.discard(item_id)
        self._idle_items.discard(item_id)
        if not self.conversation.has(item_id):
            return self._after_final(item_id, text, answered=False)  # deleted meanwhile
        item = self.conversation.get(item_id)
        item.transcript = text.strip()
        out: list[Out] = []
        if self.config.transcription is not None:
            out.append(ev.transcription_completed(item_id, item.transcript, item.audio_ms / 1000.0))
        out.append(ev.item_done(item.to_wire(), self.conversation.previous_id(item_id)))
        answer = auto and self.response is None and bool(item.transcript or idle)
        if answer:
            out += self.start_response(
                None, event_id=None, trigger=item_id, idle=idle and not item.transcript
            )
        elif auto and not item.transcript:
            logger.info("no words heard in %s: not answering", item_id)
        elif auto:
            logger.info("a response is already running: not answering %s automatically", item_id)
        return out + self._after_final(item_id, text, answered=answer)

    def _final_failed(self, item_id: str, err: ParleyError) -> list[Out]:
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
        """A final transcript is in (or failed, as ""): settle the speculation and the response that waited."""
        td = self.config.turn_detection
        out: list[Out] = []
        if td is not None and not td.create_response:
            # The client answers the turn itself (the relay, after injecting context): keep a speculation made
            # from these exact words for its response.create; the adoption checks the whole request then.
            out += self.speculations.keep_if_words(item_id, text)
        elif not answered and self.turn is not None and self.turn.item_id == item_id:
            out += self.early.forget(self.turn, "no automatic response")
        out += self.answering.transcript_in(item_id)
        return out + self._speculate()  # another item's transcript changes the request

    # --- the early answer and the response --------------------------------------------------------------------

    def _speculate(self) -> list[Out]:
        """Speculate on the turn's words with the request the turn would make now (kept if unchanged)."""
        turn = self.turn
        if turn is None or turn.words is None or self.response is not None:
            return []  # nothing to answer, or a response runs (this turn is not answered automatically then)
        spec = self.answering.spec(self.config, trigger=turn.item_id)
        return list(self.early.speculate(turn, self.conversation, spec, self._clock()))

    @property
    def response(self) -> Response | None:
        return self.answering.active

    def start_response(
        self,
        params: ce.ResponseParams | None,
        *,
        event_id: str | None,
        trigger: str | None = None,
        idle: bool = False,
    ) -> list[Out]:
        """Start a response (``parley.local.responses``). The turn is answered: the response adopts or discards its
        speculation, and nothing more is speculated for it."""
        turn = self.turn
        base = turn.stopped_at if turn is not None and turn.item_id == trigger else None
        out = self.answering.start(
            self.config,
            params,
            event_id=event_id,
            trigger=trigger,
            idle=idle,
            base=base,
            pending=self.transcription.pending,
        )
        if turn is not None:
            turn.answered()
        return out

    def cancel(self, reason: str) -> list[Out]:
        return self.answering.cancel(reason, self.buffer.end)
