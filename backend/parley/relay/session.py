"""One relay session as a state machine without I/O.

It takes a client frame, an upstream frame, a context result or the clock, and returns actions: frames for the
client or the upstream, a context lookup to run, a finished turn to record, a close. The endpoint only pumps.
Frames are forwarded as the original text; only the two hot paths (client ``input_audio_buffer.append``,
upstream ``response.output_audio.delta``) avoid anything but a cheap look at the type.
Times are ``time.monotonic()`` seconds, passed in, so tests script them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

from parley.errors import (
    InvalidRequest,
    LimitExceeded,
    NotAllowed,
    ParleyError,
    UpstreamUnavailable,
    error_event,
)
from parley.realtime.audio import BYTES_PER_MS
from parley.relay import items, replay, wire
from parley.relay.actions import (
    Action,
    AudioRate,
    CloseSession,
    ContextUsed,
    FetchContext,
    SessionConfig,
    ToClient,
    ToUpstream,
    Turn,
    TurnDone,
    UpstreamMoved,
)
from parley.relay.context import DECLINE, Context, asks_for_facts, build_query, display_source
from parley.relay.injection import ContextItems, Lookup, context_event
from parley.relay.notices import FirstFrame, Notices
from parley.relay.policy import ClientSession
from parley.relay.session_sync import Answer, SessionSync

logger = logging.getLogger(__name__)

__all__ = [
    "Action",
    "AudioRate",
    "CloseSession",
    "ContextUsed",
    "FetchContext",
    "RelaySession",
    "SessionConfig",
    "ToClient",
    "ToUpstream",
    "Turn",
    "TurnDone",
    "UpstreamMoved",
]


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


AUDIO_APPEND = "input_audio_buffer.append"
AUDIO_DELTA = "response.output_audio.delta"
P = ParamSpec("P")


def _ordered(method: Callable[Concatenate[RelaySession, P], list[Action]]) -> Callable[..., list[Action]]:
    """Whatever a public entry point returns reaches the client after ``session.created`` (``FirstFrame``)."""

    @functools.wraps(method)
    def wrapper(self: RelaySession, *args: P.args, **kwargs: P.kwargs) -> list[Action]:
        return self._first.filter(method(self, *args, **kwargs))

    return wrapper


class RelaySession:
    def __init__(self, cfg: SessionConfig, *, now: float, audio_rate: AudioRate | None = None) -> None:
        self.cfg = cfg
        self._audio_rate = audio_rate
        self.started_at = now
        self.last_activity = now
        self.end_at = now + cfg.max_duration_s
        self.warned = False
        self.draining = False
        self.closed = False
        self.response_active = False
        self._turn: Turn | None = None
        self._seq = 0
        self._pending_text = 0  # client text items sent upstream, not yet confirmed
        # A typed user item is answered as the GA API does, only when the client asks (response.create): the relay
        # looks its context up from the item's confirmation, and sends its own response.create (context first)
        # once both the lookup and the client's request are in. A request that comes before the confirmation:
        self._early_create = False
        self._seen_text_items: set[str] = set()
        self._ctx = ContextItems(speculative=cfg.rag_speculative, max_chars=cfg.rag_max_passage_chars)
        self._last_user_text: str | None = None
        self._kb_warned = False
        self.deadline_moved = False  # next_deadline() came closer: the runtime's timer must look again
        self._heard = replay.HeardLog(max_items=max(1, cfg.replay_items))  # replayed into a new upstream
        self._response_id: str | None = None
        self._lost_at: float | None = None  # the upstream died at; cleared when the new one is ready
        self._moved_from: str | None = None
        self._replayed: list[tuple[str, str]] = []
        self._notices = Notices(cfg)
        self._first = FirstFrame()
        self._sync = SessionSync(ClientSession(cfg.policy, cfg.upstream), cfg.session_id)
        self._folded: dict[str, Any] = {}  # the fields of a client's response.create folded into the turn
        H = Callable[[dict[str, Any], str, float], list[Action]]
        self._client: dict[str, H] = {
            "input_audio_buffer.commit": self._forward_client,
            "input_audio_buffer.clear": self._forward_client,
            "response.cancel": self._forward_client,
            "session.update": self._c_session_update,
            "conversation.item.retrieve": self._c_item_ref,
            "conversation.item.delete": self._c_item_ref,
            "conversation.item.truncate": self._c_truncate,
            "conversation.item.create": self._c_item_create,
            "response.create": self._c_response_create,
        }
        self._upstream: dict[str, H] = {
            "session.created": self._u_session_created,
            "session.updated": self._u_session_updated,
            **dict.fromkeys(replay.ANSWER_EVENTS, self._u_answer),
            "input_audio_buffer.speech_started": self._u_speech_started,
            "input_audio_buffer.speech_stopped": self._u_speech_stopped,
            "input_audio_buffer.committed": self._u_committed,
            "conversation.item.input_audio_transcription.delta": self._u_transcript_delta,
            "parley.pause_transcript": self._u_pause_transcript,
            "conversation.item.input_audio_transcription.completed": self._u_transcript,
            "conversation.item.input_audio_transcription.failed": self._u_transcript_failed,
            "conversation.item.added": self._u_item_added,
            "conversation.item.created": self._u_item_added,
            "conversation.item.done": self._u_item_done,
            "conversation.item.deleted": self._u_item_deleted,
            "response.created": self._u_response_created,
            "response.done": self._u_response_done,
            "error": self._u_error,
        }

    # --- lifecycle ----------------------------------------------------------------------------------------

    @_ordered
    def start(self, now: float) -> list[Action]:
        """Configure the upstream; its answer becomes the client's ``session.created`` (``session_sync``)."""
        return [ToUpstream(self._sync.initial())]

    @property
    def speculated(self) -> str | None:
        """The words the context lookup of the utterance in progress was made for (what the last partial said)."""
        return self._ctx.speculated

    @property
    def busy(self) -> bool:
        """An answer is being prepared or spoken (drain waits for this to clear)."""
        turn = self._turn
        waits_for_client = turn is not None and turn.typed and not turn.client_asked
        return self.response_active or (turn is not None and turn.t1 is not None and not waits_for_client)

    def next_deadline(self) -> float:
        deadline = self.end_at
        if not self.warned:
            deadline = min(deadline, self.end_at - self.cfg.expiry_warning_s)
        if self.cfg.idle_timeout_s > 0:
            deadline = min(deadline, self.last_activity + self.cfg.idle_timeout_s)
        turn = self._turn
        if turn is not None and turn.awaiting_speculation and turn.t1 is not None:
            deadline = min(deadline, turn.t1 + self.cfg.context_timeout_s)
        return deadline

    @_ordered
    def tick(self, now: float) -> list[Action]:
        if self.closed:
            return []
        turn = self._turn
        if (
            turn is not None
            and turn.awaiting_speculation
            and turn.t1 is not None
            and now >= turn.t1 + self.cfg.context_timeout_s
        ):
            # the speculative lookup this turn waits for is over the turn's time box: answer without it
            turn.awaiting_speculation = False
            logger.warning(
                "context lookup over %.0f ms at speech end; answering without context",
                self.cfg.context_timeout_s * 1000,
            )
            return self._answer(
                turn, Lookup(turn.query, None, "timeout", (now - turn.t1) * 1000.0), now, reused=False
            )
        if now >= self.end_at:
            return self.close(1008, "session_duration_limit", "the session reached its maximum duration")
        if (
            self.cfg.idle_timeout_s > 0
            and not self.busy  # an answer being prepared or played is not idleness
            and now - self.last_activity >= self.cfg.idle_timeout_s
        ):
            return self.close(1000, "idle_timeout", f"no audio or text for {self.cfg.idle_timeout_s:g} s")
        if not self.warned and now >= self.end_at - self.cfg.expiry_warning_s:
            self.warned = True
            left = max(0.0, self.end_at - now)
            return self._notices.session("expiring", reason="session_duration_limit", expires_in_s=left)
        return []

    @_ordered
    def shutdown(self, now: float) -> list[Action]:
        """The server is stopping: no new turns; the answer in flight may finish."""
        self.draining = True
        return self._notices.session("closing", reason="server_shutdown")

    @_ordered
    def close(self, code: int, reason: str, message: str = "") -> list[Action]:
        if self.closed:
            return []
        self.closed = True
        return self._notices.closed(code, reason, message or reason)

    @_ordered
    def upstream_lost(self, message: str, now: float = 0.0, *, moving: bool = False) -> list[Action]:
        """The upstream died. Not ``moving``: the session ends. ``moving``: the runtime connects another one; the
        turn in flight fails (``response.done`` failed, error ``upstream_lost``) and the next one works there."""
        if self.closed:
            return []
        if not moving:
            return [
                self._error(UpstreamUnavailable(message)),
                *self.close(1011, "upstream_unavailable", message),
            ]
        if self._lost_at is None:
            self._lost_at = now
        out: list[Action] = []
        turn = self._turn
        if self.response_active:
            out.append(ToClient(replay.response_failed(self._response_id, "upstream_lost")))
        if self.response_active or (turn is not None and turn.t1 is not None):
            lost = "the voice provider was lost during this answer; the session is moving to another one: ask again"
            out.append(self._error(UpstreamUnavailable(lost, code="upstream_lost")))
        self.response_active, self._turn, self._response_id, self._pending_text = False, None, None, 0
        self._heard.answer_ended()
        self._ctx.reset()  # it was in the dead upstream's conversation
        return out

    @_ordered
    def upstream_moved(
        self, provider: str, upstream: wire.UpstreamSessionConfig, *, self_interrupts: bool
    ) -> list[Action]:
        """A new upstream replaces the lost one: configure it and replay what was said and heard."""
        if self._moved_from is None:
            self._moved_from = self.cfg.provider
        self.cfg.provider, self.cfg.upstream, self.cfg.self_interrupts = provider, upstream, self_interrupts
        self._replayed = self._heard.heard()
        events = replay.replay_events(self._replayed)
        return [ToUpstream(self._sync.moved(upstream)), *(ToUpstream(e) for e in events)]

    # --- client frames ------------------------------------------------------------------------------------

    @_ordered
    def on_client_text(self, text: str, now: float) -> list[Action]:
        limit = self.cfg.max_frame_bytes
        if len(text) > limit or (
            len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
        ):
            return [
                self._error(
                    InvalidRequest(f"frame over {self.cfg.max_frame_bytes} bytes", code="frame_too_large")
                )
            ]
        try:
            ev, text = wire.parse_client_frame(text)  # from here on, what was checked is what is forwarded
        except InvalidRequest as err:
            return [self._error(err)]
        type_ = ev.get("type")
        event_id = wire.event_id_of(ev)
        if type_ == AUDIO_APPEND:
            return self._c_append(ev, text, now, event_id)
        handler = self._client.get(type_) if isinstance(type_, str) else None
        if handler is None:
            shown = type_[:64] if isinstance(type_, str) else type(type_).__name__
            return [
                self._error(NotAllowed(f"{shown} is not allowed through the relay", param="type"), event_id)
            ]
        try:
            return handler(ev, text, now)
        except ParleyError as err:
            return [self._error(err, event_id)]

    def on_client_bytes(self, data: bytes, now: float) -> list[Action]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return [self._error(InvalidRequest("binary frames must be UTF-8 JSON", code="invalid_json"))]
        return self.on_client_text(text, now)

    def _c_append(self, ev: dict[str, Any], text: str, now: float, event_id: str | None) -> list[Action]:
        audio = ev.get("audio")
        if not isinstance(audio, str):
            return [self._error(InvalidRequest("audio must be a base64 string", param="audio"), event_id)]
        audio_ms = len(audio) * 3 // 4 // BYTES_PER_MS
        if self._audio_rate is not None and not self._audio_rate.allow(audio_ms, now):
            err = LimitExceeded(
                "inbound audio faster than real time; frame dropped",
                retry_after_s=0.1,
                code="audio_rate_limited",
            )
            return [self._error(err, event_id)]
        self.last_activity = now
        return [ToUpstream(text)]

    def _forward_client(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        return [ToUpstream(text)]

    def _c_session_update(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        event_id = wire.event_id_of(ev)
        frame, refused = self._sync.client_update(ev.get("session"), event_id)
        out: list[Action] = [] if refused is None else [self._error(refused, event_id)]
        return [*out, ToUpstream(frame)]

    def _c_item_ref(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        items.check_item_ref(ev)
        return [ToUpstream(text)]

    def _c_truncate(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        items.check_item_ref(ev)
        wire.check_truncate(ev)
        self._heard.truncated(ev["item_id"], ev["audio_end_ms"])
        out: list[Action] = [ToUpstream(text)]
        if not self.cfg.self_interrupts and self.response_active:
            out.append(ToUpstream(wire.client_event("response.cancel")))
        return out

    def _c_item_create(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        kind, words = items.check_item_create(ev)
        if kind == "system_text" and not self.cfg.policy.allows("instructions"):
            raise NotAllowed("system messages are the operator's: clients may not add instructions here")
        if kind == "user_text" and words:
            self._pending_text += 1
        self.last_activity = now
        return [ToUpstream(text)]

    def _c_response_create(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        params = self._sync.client.response(ev.get("response"))
        turn = self._turn
        if turn is not None and turn.typed and not turn.client_asked and not turn.requested:
            # the request for a typed item the relay is looking up: answered once the lookup is in
            turn.client_asked, self._folded = True, params  # its metadata etc. go with the relay's request
            if turn.ready is None:
                return []
            lookup, reused = turn.ready
            return self._answer(turn, lookup, now, reused=reused)
        if self._pending_text:  # asked before the upstream confirmed the item: the turn starts asked
            self._early_create, self._folded = True, params
            return []
        if self.draining or (turn is not None and turn.t1 is not None and not turn.requested):
            logger.debug("client response.create folded into the relay's turn")
            self._folded = params
            return []
        if params != ev.get("response", {}):
            return [ToUpstream(wire.dumps({**ev, "response": params}))]
        return [ToUpstream(text)]

    # --- upstream frames ----------------------------------------------------------------------------------

    @_ordered
    def on_upstream_text(self, text: str, now: float) -> list[Action]:
        type_ = wire.peek_type(text)
        if type_ == AUDIO_DELTA:
            turn = self._turn
            if turn is not None and turn.t4 is None and turn.requested:
                turn.t4 = now
            self._heard.answer_audio(replay.audio_ms_of_delta(text))
            return [ToClient(text)]
        if type_ is not None and type_ not in self._upstream:
            return self._passed_on(type_, text)
        try:
            ev = json.loads(text)
        except (ValueError, RecursionError):
            logger.warning("upstream sent a frame that is not JSON (or nests too deep); dropped")
            return []
        type_ = str(ev.get("type")) if isinstance(ev, dict) else ""
        handler = self._upstream.get(type_)
        if handler is None:
            return self._passed_on(type_, text)
        return handler(ev, text, now)

    def _passed_on(self, type_: str, text: str) -> list[Action]:
        """An upstream event the relay does not look into: the client's, unless it is the upstream's own
        extension (e.g. the local server's ``parley.timing``), which only a client that asked for them gets."""
        return self._notices.parley(text) if type_.startswith("parley.") else [ToClient(text)]

    def _u_session_created(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        self._sync.on_created(ev)
        return []  # the client's session.created is the answer to the relay's first session.update

    def _u_session_updated(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        return self._session_answer(self._sync.on_updated(ev), now)

    def _session_answer(self, answer: Answer, now: float) -> list[Action]:
        out: list[Action] = [ToClient(frame) for frame in answer.frames]
        if answer.kind == "initial":
            return [*out, *self._notices.session("active")]
        if answer.kind != "move" or self._moved_from is None or self._lost_at is None:
            return out
        gap = now - self._lost_at
        notice = self._notices.session(
            "moved",
            reason="upstream_lost",
            previous_provider=self._moved_from,
            replayed_items=len(self._replayed),
            gap_ms=round(gap * 1000.0, 1),
        )
        moved = UpstreamMoved(self._moved_from, self.cfg.provider, gap)
        self._moved_from = self._lost_at = None
        return [*notice, moved]

    def _u_answer(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        self._heard.on_answer_event(ev)
        return [ToClient(text)]

    def _u_speech_started(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        out: list[Action] = [ToClient(text)]
        self._early_create, self._folded = False, {}
        if self.response_active and not self.cfg.self_interrupts:
            out.append(ToUpstream(wire.client_event("response.cancel")))
        if self._turn is not None and not self._turn.requested:
            logger.info("user spoke again before the answer started; turn %d superseded", self._turn.seq)
            self._turn = None
        return out

    def _u_speech_stopped(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        self._new_turn(now)
        return [ToClient(text)]

    def _u_committed(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        if self._turn is None or self._turn.requested:
            self._new_turn(now)
        return [ToClient(text)]

    def _u_transcript_delta(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        item_id, delta = ev.get("item_id"), ev.get("delta")
        out: list[Action] = [ToClient(text)]
        if isinstance(item_id, str) and isinstance(delta, str) and not self.draining:
            out.extend(self._ctx.on_partial(item_id, delta, self._last_user_text))
        return out

    def _u_pause_transcript(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        item_id, words = ev.get("item_id"), ev.get("text")
        if isinstance(item_id, str) and isinstance(words, str) and not self.draining:
            return list(self._ctx.on_pause_text(item_id, words, self._last_user_text))
        return []  # the relay's business: clients get the standard transcription events

    def _u_transcript(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        transcript = str(ev.get("transcript") or "").strip()
        item_id = ev.get("item_id") if isinstance(ev.get("item_id"), str) else None
        if self._turn is None or self._turn.requested:
            self._new_turn(now)
        assert self._turn is not None
        self._turn.item_id = item_id
        self._heard.user(transcript, item_id)
        return [ToClient(text), *self._begin_turn(self._turn, transcript, now)]

    def _u_transcript_failed(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        self._turn = None
        item_id = ev.get("item_id")
        self._ctx.finish(item_id if isinstance(item_id, str) else None)
        return [ToClient(text)]

    def _u_item_done(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        item_id = _obj(ev.get("item")).get("id")
        return [] if self._ctx.owns(item_id) or replay.owns(item_id) else [ToClient(text)]

    def _u_item_deleted(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        item_id = ev.get("item_id")
        if self._ctx.owns(item_id):
            return []
        return [ToClient(text)]

    def _u_item_added(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        item = ev.get("item")
        if isinstance(item, dict) and (self._ctx.owns(item.get("id")) or replay.owns(item.get("id"))):
            return []  # the relay's own items (context, replay): the client never sees them
        out: list[Action] = [ToClient(text)]
        if not self._pending_text or not isinstance(item, dict) or item.get("role") != "user":
            return out
        parts = item.get("content")
        parts = parts if isinstance(parts, list) else []
        texts = [
            p["text"]
            for p in parts
            if isinstance(p, dict) and p.get("type") == "input_text" and isinstance(p.get("text"), str)
        ]
        item_id = str(item.get("id") or "")
        if not texts or (item_id and item_id in self._seen_text_items):
            return out
        if item_id:
            self._seen_text_items.add(item_id)
        self._pending_text -= 1
        self._heard.user(" ".join(texts), item_id or None)
        turn = self._new_turn(now)
        turn.typed, turn.client_asked, self._early_create = True, self._early_create, False
        return out + self._begin_turn(turn, " ".join(texts).strip(), now)

    def _u_response_created(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        self.response_active = True
        rid = _obj(ev.get("response")).get("id")
        self._response_id = rid if isinstance(rid, str) else None
        self._heard.answer_started(self._response_id)
        turn = self._turn
        if turn is not None and turn.requested and turn.t3 is None:
            turn.t3 = now
        return [ToClient(text)]

    def _u_response_done(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        self.response_active = False
        self._response_id = None
        self._heard.answer_ended()
        self.last_activity = max(self.last_activity, now)  # idleness counts from the end of the answer
        out: list[Action] = [ToClient(text)]
        turn = self._turn
        if turn is None or turn.t3 is None:
            return out
        self._turn = None
        response = _obj(ev.get("response"))
        timings = turn.timings_ms()
        out += self._notices.parley(
            wire.parley_event(
                "parley.turn",
                turn_id=turn.seq,
                response_id=response.get("id"),
                status=response.get("status"),
                timings_ms=timings,
                sources=turn.sources,
            )
        )
        out.append(TurnDone(self.cfg.provider, timings))
        return out

    def _u_error(self, ev: dict[str, Any], text: str, now: float) -> list[Action]:
        err = _obj(ev.get("error"))
        if err.get("code") == "response_cancel_not_active":
            return []
        answer = self._sync.on_error(ev)
        if answer is not None:
            return self._session_answer(answer, now)
        if replay.owns_event(err.get("event_id")):
            logger.warning("upstream refused a replayed item: %s", err.get("message"))
            return []
        if self._ctx.owns_event(err.get("event_id")):
            # About the relay's own context item (e.g. deleting one the upstream no longer has): not the
            # client's business; the next turn writes a fresh item either way.
            logger.warning("upstream refused a context item event: %s", err.get("message"))
            self._ctx.reset()
            return []
        logger.warning("upstream error %s: %s", err.get("code"), err.get("message"))
        return [ToClient(text, error_code=str(err.get("code") or "upstream_error"))]

    # --- turns --------------------------------------------------------------------------------------------

    def _new_turn(self, now: float) -> Turn:
        self._seq += 1
        self._turn = Turn(self._seq, t0=now)
        return self._turn

    def _begin_turn(self, turn: Turn, transcript: str, now: float) -> list[Action]:
        if not transcript or self.draining:
            if not transcript:
                logger.info("turn %d: empty transcript, nothing to answer", turn.seq)
            self._ctx.finish(turn.item_id)
            self._turn = None
            return []
        turn.t1 = now
        turn.question = transcript
        turn.query = build_query(transcript, self._last_user_text)
        self._last_user_text = transcript
        reuse = self._ctx.reusable(turn.item_id, turn.query)
        running = reuse is None and self._ctx.running_for(turn.item_id, turn.query)
        self._ctx.finish(turn.item_id)
        if reuse is not None:
            return self._answer(turn, reuse, now, reused=True)
        if running:
            turn.awaiting_speculation = True
            self.deadline_moved = True
            return []
        return [FetchContext(turn.seq, turn.query, item_id=turn.item_id)]

    @_ordered
    def on_context(
        self, req: FetchContext, context: Context | None, status: str, retrieval_ms: float, now: float
    ) -> list[Action]:
        """A lookup finished (``status``: ok, timeout, error). Speculative ones (``req.turn`` None) may be
        injected at once, or complete a turn that waited for them."""
        if self.closed:
            return []
        if context is not None and status == "ok":
            status = "off" if not context.searched else "ok" if context.passages else "empty"
        lookup = Lookup(req.query, context, status, retrieval_ms)
        out: list[Action] = []
        if status == "error" and not self._kb_warned:
            self._kb_warned = True
            out += self._notices.parley(
                wire.parley_event(
                    "parley.warning",
                    code="knowledge_base_unavailable",
                    message="The knowledge base is not answering; answers come without it for now.",
                )
            )
        turn = self._turn
        if req.turn is None:
            turn_open = turn is None or turn.t1 is None or not turn.requested
            newer = self._ctx.speculative_done(req, lookup, turn_open=turn_open)
            out.extend(newer)
            if newer:
                return out  # a newer partial is being looked up: this result is already stale
            if (
                turn is not None
                and turn.awaiting_speculation
                and not turn.requested
                and turn.item_id == req.item_id
            ):
                turn.awaiting_speculation = False
                out.extend(self._answer(turn, lookup, now, reused=True))
            elif status in ("ok", "empty") and self._ctx.may_inject_early(req):
                out.extend(self._ctx.apply(lookup))
            return out
        if turn is None or turn.seq != req.turn or turn.requested:
            return out  # superseded (barge-in, new speech): nothing is injected for it
        return out + self._answer(turn, lookup, now, reused=False)

    def _answer(self, turn: Turn, lookup: Lookup, now: float, *, reused: bool) -> list[Action]:
        """Make the context item match this turn's lookup, tell the client, ask the upstream to answer (a typed
        turn: once the client has asked too)."""
        if turn.typed and not turn.client_asked:
            turn.ready = (lookup, reused)
            return []
        turn.t2 = now
        turn.requested = True
        out: list[Action] = list(self._ctx.apply(lookup))
        passages = lookup.context.passages if lookup.context is not None else []
        turn.sources = list(dict.fromkeys(display_source(p.source) for p in passages))
        wait_ms = (now - turn.t1) * 1000.0 if turn.t1 is not None else None
        out += self._notices.parley(context_event(turn.seq, turn.query, lookup, self.cfg.kb, reused, wait_ms))
        out.append(ContextUsed(lookup.status, reused))
        params, self._folded = self._folded, {}
        if lookup.status == "empty" and self.cfg.rag_decline and asks_for_facts(turn.question):
            # Nothing in the knowledge base is close enough: decided here, from the similarity, and said by the
            # model under an instruction for this one response (a small model ignores a note and guesses).
            instructions = params.get("instructions") or self._sync.client.effective_instructions()
            params = {**params, "instructions": f"{instructions}\n\n{DECLINE}".strip()}
        fields = {"response": params} if params else {}
        out.append(ToUpstream(wire.client_event("response.create", **fields)))
        return out

    # --- events the relay writes --------------------------------------------------------------------------

    def _error(self, err: ParleyError, event_id: str | None = None) -> ToClient:
        return ToClient(wire.dumps(error_event(err, event_id=event_id)), error_code=err.code)
