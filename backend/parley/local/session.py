"""``LocalSession``: the runtime of one client's local voice session. It pumps; ``SessionState`` decides.

One ``asyncio.TaskGroup`` holds every task of the session: the reader (client frames -> ``SessionState``), the
writer (outbound queue -> client), the response task, transcription tasks (``parley.local.transcripts``: the
speech so far at each pause onset, optional periodic partials, the final one per committed item) and the
speculative answer started during a pause (``parley.local.preemptive``), re-planned whenever the conversation or
the session changes before the turn is answered. When the client goes away the reader or writer raises ``_Closed``
and the group cancels the rest. The outbound queue is bounded (``settings.outbound_queue_size``); when it is full, producers wait
(the response pipeline pauses, the reader stops reading), which pushes back on a client that does not read.

Transport-agnostic: ``recv()`` returns the next text frame or None when the client has gone; ``send(text)`` sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from parley.errors import InvalidRequest, ParleyError, STTFailed, error_event
from parley.local.engines import Engines
from parley.local.preemptive import Plan, Preemptor, adopted_engines
from parley.local.responder import generate
from parley.local.response_run import ResponseRun, ResponseSpec, Status
from parley.local.session_state import (
    CancelResponse,
    Out,
    SessionState,
    SpeechBegan,
    StartResponse,
    Transcribe,
)
from parley.local.transcripts import Transcripts
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS
from parley.realtime.events import event_id_of, parse_client_event
from parley.settings import Settings

logger = logging.getLogger(__name__)

Event = dict[str, Any]
TRANSCRIPT_WAIT_S = 30.0
REPLAN_DEBOUNCE_S = 0.01


class _Closed(Exception):
    """The client went away."""


@dataclass(slots=True)
class _Active:
    task: asyncio.Task[None]
    reason: str | None = None
    marks: dict[str, float] = field(default_factory=dict)


class LocalSession:
    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        *,
        recv: Callable[[], Awaitable[str | bytes | None]],
        send: Callable[[str], Awaitable[None]],
        model: str = "parley-local",
        parley_events: bool = True,
    ) -> None:
        self.settings = settings
        self._parley_events = parley_events
        self.engines = engines
        self._recv = recv
        self._send = send
        self.state = SessionState(
            vad_factory=engines.vad,
            voices=engines.tts.voices(),
            max_append_ms=settings.max_append_audio_ms,
            max_buffer_s=settings.max_buffer_audio_s,
            llm_max_tokens=settings.llm_max_tokens,
            language=settings.stt_language,
            model=model,
            stt_model=engines.stt.model_name,
        )
        self._out: asyncio.Queue[Event] = asyncio.Queue(maxsize=settings.outbound_queue_size)
        self._tg: asyncio.TaskGroup | None = None
        self._response: _Active | None = None
        self._pending_tx: dict[str, asyncio.Event] = {}
        self._stopped_at: dict[str, float] = {}
        self._paused: tuple[str, str] | None = None
        """(item id, words): the latest pause-onset transcript of the turn that is not answered yet."""
        self._tx = Transcripts(
            self.state,
            engines.stt,
            self._emit,
            interval_ms=settings.stt_partial_interval_ms,
            on_paused_text=self._on_paused_text,
            on_resumed=lambda item_id: self._forget(item_id, reason="speech resumed"),
        )
        self._preempt = Preemptor(engines, self._spawn)
        self._replan: asyncio.TimerHandle | None = None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        return self._tg.create_task(coro, name=name)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._writer(), name="writer")
                await self._apply(self.state.created())
                tg.create_task(self._reader(), name="reader")
        except* _Closed:
            logger.debug("session %s closed", self.state.session_id)
        finally:
            if self._replan is not None:
                self._replan.cancel()

    # --- pumps ------------------------------------------------------------------------------------------------

    async def _reader(self) -> None:
        limit = self.settings.max_event_bytes
        while True:
            raw = await self._recv()
            if raw is None:
                raise _Closed
            if len(raw) > limit:
                err = InvalidRequest(
                    f"Event of {len(raw)} bytes exceeds the limit of {limit} bytes.", code="event_too_large"
                )
                await self._emit([error_event(err)])
                continue
            try:
                event = parse_client_event(raw)
            except InvalidRequest as err:
                await self._emit([error_event(err, event_id=event_id_of(raw))])
                continue
            if event.type == "response.create":
                self._replan_now()  # a re-plan still waiting must be in place for the response to adopt
            try:
                outs = self.state.handle(event)
            except Exception as exc:  # a bug must not end the session
                logger.exception("handling %s failed", event.type)
                outs = [error_event(exc, event_id=event.event_id)]
            await self._apply(outs)
            if event.type == "input_audio_buffer.append":
                self._tx.on_audio()
            else:
                self._replan_soon()  # the conversation or the session may have changed the request

    def _replan_soon(self, delay_s: float = 0.0) -> None:
        """Re-plan the speculation shortly: events that come together (the relay replaces its context item with a
        delete and a create) make one re-plan, not a speculation started and cancelled in between."""
        if self._replan is not None:
            self._replan.cancel()
        delay_s = delay_s or REPLAN_DEBOUNCE_S
        self._replan = asyncio.get_running_loop().call_later(delay_s, self._replan_now)

    def _replan_now(self) -> None:
        if self._replan is not None:
            self._replan.cancel()
            self._replan = None
            self._speculate()

    async def _writer(self) -> None:
        while True:
            event = await self._out.get()
            if not self._parley_events and event["type"].startswith("parley."):
                continue  # a strict GA client
            try:
                await self._send(json.dumps(event))
            except Exception as exc:
                logger.debug("send failed: %r", exc)
                raise _Closed from exc

    async def _emit(self, events: list[Event]) -> None:
        for event in events:
            await self._out.put(event)

    async def _apply(self, outs: list[Out]) -> None:
        assert self._tg is not None
        for out in outs:
            if isinstance(out, dict):
                if out["type"] == "input_audio_buffer.speech_stopped":
                    self._stopped_at[out["item_id"]] = time.monotonic()
                await self._out.put(out)
            elif isinstance(out, Transcribe):
                self._pending_tx[out.item_id] = asyncio.Event()
                self._tg.create_task(self._transcribe(out), name=f"stt-{out.item_id}")
            elif isinstance(out, StartResponse):
                active = _Active(task=None)  # type: ignore[arg-type]
                active.task = self._tg.create_task(
                    self._respond(out.spec, active), name=f"resp-{out.spec.id}"
                )
                self._response = active
                # The turn is answered: its response adopts the speculation or discards it; no more re-plans.
                self._paused = None
            elif isinstance(out, CancelResponse):
                await self._cancel_response(out.reason)
            elif isinstance(out, SpeechBegan):
                self._forget(None, reason="new speech")
                utt = self._tx.begin(out.item_id, out.start)
                self._tg.create_task(self._tx.run(utt), name=f"partials-{out.item_id}")

    # --- transcription ----------------------------------------------------------------------------------------

    async def _transcribe(self, t: Transcribe) -> None:
        started = time.monotonic()
        text = ""
        try:
            text = await self._tx.final_text(t)
            outs = self.state.on_transcript(t.item_id, text)
        except ParleyError as err:
            logger.warning("transcription of %s failed: %s", t.item_id, err.message)
            outs = self.state.on_transcript_failed(t.item_id, err)
        except Exception as exc:
            logger.exception("transcription of %s failed", t.item_id)
            outs = self.state.on_transcript_failed(t.item_id, STTFailed(f"transcription failed: {exc}"))
        finally:
            self._pending_tx.pop(t.item_id, asyncio.Event()).set()
        logger.info(
            "transcribed %s (%d ms audio) in %.0f ms",
            t.item_id,
            len(t.pcm) // BYTES_PER_MS,
            (time.monotonic() - started) * 1000,
        )
        td = self.state.config.turn_detection
        if td is not None and not td.create_response:
            # The client answers the turn itself (the relay, after injecting context): keep a speculation made
            # from these exact words for its response.create; ``adopt`` checks the whole request then.
            self._preempt.keep_if_words(t.item_id, text)
        elif not any(isinstance(o, StartResponse) and o.spec.trigger_item_id == t.item_id for o in outs):
            self._forget(t.item_id, reason="no automatic response")
        await self._apply(outs)
        self._speculate()  # another item's transcript changes the request; this turn's final words do not

    def _on_paused_text(self, item_id: str, text: str) -> None:
        """A transcript of the speech so far, made while the user pauses: start the answer it would get. A client
        that answers turns itself (``create_response=false``, e.g. the relay) is given a moment to add context
        for these words first (it gets them as ``parley.pause_transcript``): a speculation started without it
        would be replaced at once, and llama.cpp finishes reading a cancelled request's prompt before the next."""
        if self.settings.preemptive_generation and text.strip():
            self._paused = (item_id, text.strip())
            td = self.state.config.turn_detection
            grace = self.settings.preemptive_client_grace_ms / 1000.0
            if td is not None and not td.create_response and grace > 0:
                self._replan_soon(grace)
            else:
                self._speculate()

    def _forget(self, item_id: str | None, *, reason: str) -> None:
        """The held pause transcript (of ``item_id``, when given) will not be answered: drop it, discard its
        speculation."""
        if self._paused is not None and item_id in (None, self._paused[0]):
            self._paused = None
        self._preempt.discard(item_id, reason=reason)

    def _speculate(self) -> None:
        """Speculate on the held pause transcript with the request its turn would make now. Called when it arrives
        and after anything that may change that request; the Preemptor keeps a speculation whose plan is unchanged
        and replaces one whose plan differs."""
        if self._paused is None or self.state.active_response_id is not None:
            return  # nothing to answer, or a response runs (this turn is not answered automatically then)
        item_id, words = self._paused
        conv = self.state.conversation
        spec = self.state.response_spec(trigger=item_id)
        if self.state.speech_item_id == item_id:
            # Pausing: the turn's user item will be appended at the end when it is committed.
            messages = [*conv.llm_messages(spec.instructions), {"role": "user", "content": words}]
        elif self._unanswered(item_id, words):
            # Committed (maybe before context items): the words stand in for its transcript, in its place.
            messages = conv.llm_messages(spec.instructions, pending={item_id: words})
        else:
            self._forget(item_id, reason="turn over")
            return
        self._preempt.start(item_id, words, Plan.of(spec, messages))

    def _unanswered(self, item_id: str, words: str) -> bool:
        """The committed turn ``item_id`` may still be answered from ``words``: its transcript is pending or these
        words, and only system items (context) came after it."""
        conv = self.state.conversation
        if not conv.has(item_id) or conv.get(item_id).transcript not in (None, words):
            return False
        return all(item.role == "system" for item in conv.items_after(item_id))

    # --- responses --------------------------------------------------------------------------------------------

    async def _cancel_response(self, reason: str) -> None:
        active = self._response
        if active is None or active.task.done():
            return
        active.reason = reason
        active.task.cancel()
        await asyncio.wait([active.task])  # its closing events (response.done cancelled) are queued by now

    async def _respond(self, spec: ResponseSpec, active: _Active) -> None:
        run = ResponseRun(spec, self.state.conversation)
        marks = active.marks
        marks["start"] = time.monotonic()
        status: Status = "completed"
        reason: str | None = None
        failure: ParleyError | None = None
        audio_seen = False

        async def emit(events: list[Event]) -> None:
            nonlocal audio_seen
            if not audio_seen and run.item.audio_ms:
                audio_seen = True
                self.state.response_audio_started(spec.id)  # the idle timeout counts from its end
            await self._emit(events)

        try:
            await self._emit(run.start())
            await self._await_transcripts(spec)
            items = list(spec.input_items) if spec.input_items is not None else None
            messages = self.state.conversation.llm_messages(spec.instructions, items)
            adopted = self._preempt.adopt(spec.trigger_item_id, Plan.of(spec, messages))
            engines = self.engines
            if adopted is not None:
                engines = adopted_engines(adopted, engines)
                marks["preemptive_start"] = adopted.started
            try:
                if await generate(run, messages, engines, emit, marks):
                    status, reason = "incomplete", "max_output_tokens"
            finally:
                if adopted is not None:
                    adopted.cancel()  # no-op when it ran to the end
        except asyncio.CancelledError:
            if active.reason is None:
                raise  # the session is ending
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            status, reason = "cancelled", active.reason
        except ParleyError as err:
            logger.warning("response %s failed: %s", spec.id, err.message)
            status, failure = "failed", err
        except Exception as exc:
            logger.exception("response %s failed", spec.id)
            status, failure = "failed", ParleyError(f"internal error: {type(exc).__name__}")
        self.state.response_finished(spec.id, run.item.audio_ms)
        if self._response is active:
            self._response = None
        closing = run.finish(status, reason=reason, error=failure)
        if failure is not None:
            closing.insert(0, error_event(failure, event_id=spec.event_id))
        closing.insert(-1, ev.parley_timing(spec.id, **self._timings(spec, marks)))
        await self._emit(closing)
        logger.info("response %s %s (%s)", spec.id, status, reason or "")

    async def _await_transcripts(self, spec: ResponseSpec) -> None:
        items = spec.input_items if spec.input_items is not None else tuple(self.state.conversation)
        waits = [self._pending_tx[i.id].wait() for i in items if i.id in self._pending_tx]
        if waits:
            async with asyncio.timeout(TRANSCRIPT_WAIT_S):
                await asyncio.gather(*waits)

    def _timings(self, spec: ResponseSpec, marks: dict[str, float]) -> dict[str, float]:
        base = self._stopped_at.pop(spec.trigger_item_id, None) if spec.trigger_item_id else None
        base = base if base is not None else marks["start"]
        out = {f"{k}_ms": (v - base) * 1000.0 for k, v in marks.items() if k != "start"}
        out["response_start_ms"] = (marks["start"] - base) * 1000.0
        return out
