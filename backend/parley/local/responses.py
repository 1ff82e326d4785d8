"""The response being answered, as the protocol sees it (pure; ``parley.local.protocol`` owns one ``Answering``).

A response is opened with ``response.created`` at once. Its phases: ``AWAITING_TRANSCRIPTS`` (the transcripts of its
input items are still running, so its request is not known yet; given up after ``TRANSCRIPT_WAIT_S``) and
``GENERATING`` (its ``Plan`` went to the engines as a ``Generate`` effect, adopting the speculation when the plans
are equal). The generation's results (LLM chunks, phrases, audio) come back tagged with the response's id and become
its events; results for a response that is no longer active are ignored. Cancelling closes it at once
(``response.done`` cancelled, with ``StopGenerating`` first), so nothing of it is sent afterwards.

Its timings (``parley.timing``) count from its turn's ``speech_stopped`` (else from its start). The idle timeout
(``parley.local.idle``) counts from where its audio stops playing: positions on the input-audio clock
(``input_end``) are passed in.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from parley.errors import ParleyError, error_event
from parley.local.conversation import Conversation
from parley.local.effects import Event, Generate, Out, StopGenerating
from parley.local.engines import LLMChunk, ToolCallDelta
from parley.local.idle import IdleTimer
from parley.local.plan import Plan
from parley.local.response_run import ResponseRun, ResponseSpec, Status
from parley.local.response_spec import build_spec
from parley.local.session_config import SessionConfig
from parley.local.speculation import Speculations
from parley.realtime import events as ce
from parley.realtime import server_events as ev

logger = logging.getLogger(__name__)

TRANSCRIPT_WAIT_S = 30.0
IDLE_NOTE = "The user has said nothing for a while since your last answer. In one short sentence, invite them to go on."


class ResponsePhase(enum.Enum):
    AWAITING_TRANSCRIPTS = "awaiting_transcripts"
    GENERATING = "generating"


@dataclass(slots=True)
class Response:
    spec: ResponseSpec
    run: ResponseRun
    started: float  # clock seconds
    base: float  # what its timings count from
    waiting: set[str]  # items whose transcripts it waits for
    phase: ResponsePhase = ResponsePhase.AWAITING_TRANSCRIPTS
    marks: dict[str, float] = field(default_factory=dict)  # preemptive_start, llm_first_token, first_audio

    @property
    def deadline(self) -> float | None:
        waits = self.phase is ResponsePhase.AWAITING_TRANSCRIPTS
        return self.started + TRANSCRIPT_WAIT_S if waits else None

    def timings_ms(self) -> dict[str, float]:
        out = {f"{k}_ms": (v - self.base) * 1000.0 for k, v in self.marks.items()}
        out["response_start_ms"] = (self.started - self.base) * 1000.0
        return out


class Answering:
    def __init__(
        self,
        conversation: Conversation,
        speculations: Speculations,
        idle: IdleTimer,
        clock: Callable[[], float],
        *,
        conversation_id: str,
        voices: Sequence[str],
        llm_max_tokens: int,
    ) -> None:
        self.active: Response | None = None
        self._conversation = conversation
        self._conversation_id = conversation_id
        self._voices = voices
        self._llm_max_tokens = llm_max_tokens
        self._speculations = speculations
        self._idle = idle
        self._clock = clock

    def spec(
        self,
        cfg: SessionConfig,
        params: ce.ResponseParams | None = None,
        *,
        event_id: str | None = None,
        trigger: str | None = None,
    ) -> ResponseSpec:
        """The response ``params`` (None: an automatic one after turn ``trigger``) would run now."""
        return build_spec(
            cfg,
            params,
            conversation=self._conversation,
            conversation_id=self._conversation_id,
            voices=self._voices,
            llm_max_tokens=self._llm_max_tokens,
            event_id=event_id,
            trigger=trigger,
        )

    def start(
        self,
        cfg: SessionConfig,
        params: ce.ResponseParams | None,
        *,
        event_id: str | None,
        trigger: str | None,
        idle: bool,
        base: float | None,
        pending: set[str],
    ) -> list[Out]:
        """``response.created`` now; the request once the transcripts of its input items (``pending`` among them)
        are in. ``idle``: answering the idle timeout's silence. Raises ``InvalidRequest`` before any change."""
        spec = self.spec(cfg, params, event_id=event_id, trigger=trigger)
        if idle:
            spec = replace(spec, instructions=f"{spec.instructions}\n\n{IDLE_NOTE}".strip())
        now = self._clock()
        items = spec.input_items if spec.input_items is not None else tuple(self._conversation)
        waiting = {item.id for item in items if item.id in pending}
        r = Response(
            spec, ResponseRun(spec, self._conversation), now, base if base is not None else now, waiting
        )
        self.active = r
        self._idle.stop()
        out: list[Out] = list(r.run.start())
        return out if waiting else out + self._generate(r)

    def transcript_in(self, item_id: str) -> list[Out]:
        """A final transcript came in (or failed): the response waiting for it may know its request now."""
        r = self.active
        if r is None or r.phase is not ResponsePhase.AWAITING_TRANSCRIPTS or item_id not in r.waiting:
            return []
        r.waiting.discard(item_id)
        return [] if r.waiting else self._generate(r)

    def _generate(self, r: Response) -> list[Out]:
        spec = r.spec
        items = list(spec.input_items) if spec.input_items is not None else None
        plan = Plan.of(spec, self._conversation.llm_messages(spec.llm_instructions, items))
        guess, out = self._speculations.adopt(spec.trigger_item_id, plan, self._clock())
        r.phase = ResponsePhase.GENERATING
        if guess is not None:
            r.marks["preemptive_start"] = guess.started
        return [*out, Generate(spec.id, plan, guess.id if guess is not None else None)]

    def tick(self, now: float, input_end: int) -> list[Out]:
        r = self.active
        if r is None or r.deadline is None or now < r.deadline:
            return []
        failure = ParleyError("the input transcripts did not come in time", code="transcription_failed")
        return self._close(r, "failed", input_end, failure=failure)

    # --- the generation's results -------------------------------------------------------------------------------

    def _generating(self, response_id: str) -> Response | None:
        r = self.active
        ok = r is not None and r.spec.id == response_id and r.phase is ResponsePhase.GENERATING
        return r if ok else None

    def llm(self, response_id: str, chunk: LLMChunk) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        r.marks.setdefault("llm_first_token", self._clock())
        if isinstance(chunk, str):
            return list(r.run.llm_delta(chunk))
        if isinstance(chunk, ToolCallDelta):
            return list(r.run.tool_delta(chunk))
        r.run.llm_end(chunk)
        return []

    def phrase(self, response_id: str, text: str) -> list[Out]:
        r = self._generating(response_id)
        if r is not None:
            r.run.begin_phrase(text)
        return []

    def audio(self, response_id: str, pcm: bytes, input_end: int) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        r.marks.setdefault("first_audio", self._clock())
        if not r.run.item.audio_ms:
            self._idle.audio_started(input_end)  # the idle timeout counts from where it stops playing
        return list(r.run.audio(pcm))

    def phrase_end(self, response_id: str) -> list[Out]:
        r = self._generating(response_id)
        return list(r.run.end_phrase()) if r is not None else []

    def generated(self, response_id: str, input_end: int) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        if r.run.hit_token_cap():
            return self._close(r, "incomplete", input_end, reason="max_output_tokens")
        return self._close(r, "completed", input_end)

    def failed(self, response_id: str, exc: BaseException, input_end: int) -> list[Out]:
        r = self._generating(response_id)
        if r is None:
            return []
        if isinstance(exc, ParleyError):
            logger.warning("response %s failed: %s", response_id, exc.message)
            return self._close(r, "failed", input_end, failure=exc)
        logger.error("response %s failed", response_id, exc_info=exc)
        failure = ParleyError(f"internal error: {type(exc).__name__}")
        return self._close(r, "failed", input_end, failure=failure)

    # --- the end ----------------------------------------------------------------------------------------------

    def cancel(self, reason: str, input_end: int) -> list[Out]:
        """Cancel the active response (``turn_detected``, ``client_cancelled``): stop its generation, close it."""
        r = self.active
        if r is None:
            return []
        out: list[Out] = [StopGenerating(r.spec.id)] if r.phase is ResponsePhase.GENERATING else []
        return out + self._close(r, "cancelled", input_end, reason=reason)

    def _close(
        self,
        r: Response,
        status: Status,
        input_end: int,
        *,
        reason: str | None = None,
        failure: ParleyError | None = None,
    ) -> list[Out]:
        self.active = None
        self._idle.answer_ended(input_end, r.run.item.audio_ms)
        closing: list[Event] = r.run.finish(status, reason=reason, error=failure)
        if failure is not None:
            closing.insert(0, error_event(failure, event_id=r.spec.event_id))
        closing.insert(-1, ev.parley_timing(r.spec.id, **r.timings_ms()))
        logger.info("response %s %s (%s)", r.spec.id, status, reason or "")
        return list(closing)
