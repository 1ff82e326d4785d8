"""One accepted session at run time: a TaskGroup of pumps around a ``RelaySession``.

Tasks: client reader, client outbox pump, upstream reader, upstream outbox pump, context runner, timer, lease renewer. The
first one to end the session raises ``_Ended``, which cancels the rest. Queues are bounded:

- client -> upstream and upstream -> client are ``Outbox``es: a frame is sent inline when nothing is queued or
  being sent (no task hop), else queued, ``relay_queue_size`` frames at most. When one is full the producer waits
  (TCP back-pressure to whoever sends too fast; audio is never dropped, which would garble speech and skew the
  client's truncate position). Every write to the client goes through ``ClientLink``, held to ``client_stall_s``:
  a client that accepts nothing that long has its connection reset and the session ends at once. An upstream
  that accepts nothing that long ends the session (1008).
- upstream failover: when the upstream dies, the upstream reader asks the ``PooledUpstream`` to ``move`` and the
  session to configure the new one and replay the conversation (``replay``); frames for the upstream are dropped
  while it moves. When nothing is left, or failover is off, the session ends (1011) as before.
- context lookups: 4 requests; when full the oldest is dropped (a newer turn or partial makes it stale anyway;
  the session never has more than one speculative lookup queued or running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from parley.errors import UpstreamUnavailable
from parley.relay.client_link import ClientGone, ClientLink, ClientStalled
from parley.relay.context import Context
from parley.relay.outbox import Outbox
from parley.relay.policy import Policy
from parley.relay.pooled import PooledUpstream
from parley.relay.session import (
    Action,
    CloseSession,
    ContextUsed,
    FetchContext,
    RelaySession,
    SessionConfig,
    ToClient,
    ToUpstream,
    TurnDone,
    UpstreamMoved,
)
from parley.relay.upstream import ProviderConfig, Upstream

if TYPE_CHECKING:
    from parley.relay.gate import Admission
    from parley.relay.session import AudioRate
    from parley.relay.state import RelayState

logger = logging.getLogger(__name__)

LIMIT_CODES = frozenset({"audio_rate_limited"})
SPECULATIVE_TIMEOUT_S = 1.0


class _Ended(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionRuntime:
    def __init__(
        self,
        state: RelayState,
        ws: WebSocket,
        admission: Admission,
        provider: ProviderConfig,
        upstream: Upstream,
        *,
        audio_rate: AudioRate | None = None,
    ) -> None:
        s = state.settings
        self.state = state
        self.ws = ws
        self.admission = admission
        self.upstream = upstream
        self.drain_requested = asyncio.Event()
        self.finished = asyncio.Event()
        self._wake = asyncio.Event()  # the timer re-reads the session's next deadline
        self._drain_grace_s = s.shutdown_grace_s
        grant = admission.grant
        cfg = SessionConfig(
            session_id=admission.session_id,
            provider=admission.provider,
            upstream=provider.session,
            self_interrupts=provider.self_interrupts,
            max_frame_bytes=s.max_frame_bytes,
            idle_timeout_s=float(s.idle_timeout_s),
            kb=admission.kb,
            context_timeout_s=s.context_timeout_ms / 1000.0,
            rag_speculative=s.rag_speculative,
            rag_max_passage_chars=s.rag_max_passage_chars,
            rag_decline=s.rag_decline,
            max_duration_s=float(s.session_max_duration_s),
            expiry_warning_s=s.expiry_warning_s,
            limits={
                "max_concurrent_sessions": grant.max_concurrent,
                "sessions_per_hour": grant.per_hour,
                "max_duration_s": s.session_max_duration_s,
                "idle_timeout_s": s.idle_timeout_s,
                "max_audio_ms_per_s": s.max_audio_rate,
                "max_frame_bytes": s.max_frame_bytes,
            },
            quota={
                "active_sessions": grant.active,
                "sessions_started_this_hour": grant.starts_in_window,
                "sessions_left_this_hour": max(0, grant.per_hour - grant.starts_in_window),
            },
            expires_at=grant.expires_at,
            replay_items=s.failover_replay_items,
            parley_events=admission.parley_events,
            policy=Policy.from_settings(s),
        )
        self.session = RelaySession(cfg, now=time.monotonic(), audio_rate=audio_rate)
        size = s.relay_queue_size
        self._to_client: Outbox[str | CloseSession] = Outbox(self._send_client, size)
        self._to_upstream: Outbox[str] = Outbox(self._send_upstream, size)
        self._upstream_broken = False
        self._moving = False  # the upstream died and another is being connected: frames for it are dropped
        self._upstream_gen = 0  # which connection a send went to (a late failure of a dead one is ignored)
        self._contexts: asyncio.Queue[FetchContext] = asyncio.Queue(4)
        self._stall_s = s.client_stall_s
        aborts = state.resilience.client_aborts
        self._client = ClientLink(ws, s.client_stall_s, on_abort=lambda reason: aborts.labels(reason).inc())
        self.close_reason = ""

    def request_drain(self, grace_s: float) -> None:
        self._drain_grace_s = grace_s
        self.drain_requested.set()
        self._wake.set()

    async def run(self) -> None:
        """Pump until the session ends. Never raises for a normal end; the caller closes the upstream."""
        s = self.state.settings
        backstop = s.session_max_duration_s + s.shutdown_grace_s + 5.0
        try:
            await self._dispatch(self.session.start(time.monotonic()))
            async with asyncio.timeout(backstop), asyncio.TaskGroup() as tg:
                tg.create_task(self._client_reader())
                tg.create_task(self._to_client.pump())
                tg.create_task(self._upstream_reader())
                tg.create_task(self._to_upstream.pump())
                tg.create_task(self._context_runner())
                tg.create_task(self._timer())
                tg.create_task(self._lease_renewer())
        except* _Ended as group:
            self.close_reason = str(group.exceptions[0])
        except* TimeoutError:
            self.close_reason = "duration backstop"
            logger.warning("session outlived its duration backstop; closing")
            await self._close_ws(1008, "session_duration_limit")
        finally:
            self.finished.set()

    # --- dispatch -----------------------------------------------------------------------------------------

    async def _dispatch(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ToUpstream):
                await self._put_upstream(action.data)
            elif isinstance(action, ToClient):
                if action.error_code is not None:
                    self._count_error(action.error_code)
                await self._to_client.put(action.data)  # every client send has its deadline (ClientLink)
            elif isinstance(action, FetchContext):
                if self._contexts.full():
                    self._contexts.get_nowait()
                self._contexts.put_nowait(action)
            elif isinstance(action, ContextUsed):
                self.state.metrics.turn_context.labels(action.status, str(action.speculative).lower()).inc()
            elif isinstance(action, TurnDone):
                self.state.metrics.observe_turn(action.provider, action.timings_ms)
            elif isinstance(action, CloseSession):
                await self._to_client.put(action)
            elif isinstance(action, UpstreamMoved):
                r = self.state.resilience
                r.failovers.labels(action.from_provider, action.to_provider, "moved").inc()
                r.failover_gap.observe(action.gap_s)

    async def _put_upstream(self, data: str) -> None:
        try:
            async with asyncio.timeout(self._stall_s):
                await self._to_upstream.put(data)
        except TimeoutError:
            logger.warning("upstream accepted nothing for %.0f s; closing the session", self._stall_s)
            await self._close_ws(1008, "upstream_too_slow")
            raise _Ended("upstream too slow") from None

    def _count_error(self, code: str) -> None:
        m = self.state.metrics
        m.errors_total.labels(code).inc()
        if code in LIMIT_CODES:
            m.limit_rejections.labels(code).inc()

    async def _close_ws(self, code: int, reason: str) -> None:
        await self._client.close(code, reason)  # bounded: resets the connection when the close cannot be sent

    # --- tasks --------------------------------------------------------------------------------------------

    async def _client_reader(self) -> None:
        receive = self.ws.receive
        session = self.session
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                raise _Ended(f"client closed ({message.get('code')})")
            text = message.get("text")
            now = time.monotonic()
            if text is not None:
                actions = session.on_client_text(text, now)
            else:
                actions = session.on_client_bytes(message.get("bytes") or b"", now)
            await self._dispatch(actions)

    async def _send_client(self, item: str | CloseSession) -> None:
        if isinstance(item, CloseSession):
            logger.info("closing session: %s (%d)", item.reason, item.code)
            await self._close_ws(item.code, item.reason)
            raise _Ended(item.reason)
        try:
            await self._client.send(item)
        except ClientStalled:
            raise _Ended("client too slow") from None
        except ClientGone:
            raise _Ended("client gone") from None

    async def _upstream_reader(self) -> None:
        while True:
            message = await self._read_upstream()
            if self.session.closed:
                return
            self.state.metrics.upstream_failures.labels(self.session.cfg.provider).inc()
            logger.warning("upstream lost: %s", message)
            if not await self._fail_over(message):
                await self._dispatch(self.session.upstream_lost(message))
                return

    async def _read_upstream(self) -> str:
        """Pump the upstream's frames into the session until the connection ends; returns why it ended."""
        try:
            async for text in self.upstream:
                await self._dispatch(self.session.on_upstream_text(text, time.monotonic()))
                if self.session.deadline_moved:  # e.g. a turn now waits for a speculative lookup
                    self.session.deadline_moved = False
                    self._wake.set()
        except UpstreamUnavailable as exc:
            return exc.message
        return f"the {self.session.cfg.provider} voice provider closed the session"

    async def _fail_over(self, message: str) -> bool:
        """Move the session to another upstream (see ``pooled``). False: nothing left, or failover is off."""
        up = self.upstream
        if (
            not isinstance(up, PooledUpstream)
            or self.session.draining
            or not self.state.settings.upstream_failover
        ):
            return False
        before = self.session.cfg.provider
        providers = self.admission.principal.providers
        self._moving = True
        try:
            await self._dispatch(self.session.upstream_lost(message, time.monotonic(), moving=True))
            cfg = await up.move(lambda p: providers is None or p in providers)
        finally:
            self._to_upstream.clear()  # frames from before the new upstream is configured
            self._moving, self._upstream_broken = False, False
            self._upstream_gen += 1
        if cfg is None:
            self.state.resilience.failovers.labels(before, "none", "failed").inc()
            return False
        logger.info("session moving from the %s to the %s provider's upstream", before, cfg.name)
        moved = self.session.upstream_moved(cfg.name, cfg.session, self_interrupts=cfg.self_interrupts)
        await self._dispatch(moved)
        return True

    async def _send_upstream(self, data: str) -> None:
        if self._upstream_broken or self._moving:
            return
        gen = self._upstream_gen
        try:
            await self.upstream.send(data)
        except Exception as exc:  # the upstream reader reports the loss; this side just stops sending
            logger.debug("upstream send failed: %s", type(exc).__name__)
            if gen == self._upstream_gen:
                self._upstream_broken = True

    async def _context_runner(self) -> None:
        provider = self.state.context
        timeout_s = self.state.settings.context_timeout_ms / 1000.0
        m = self.state.metrics
        kb = self.admission.kb
        while True:
            req = await self._contexts.get()
            context: Context | None = None
            status = "ok"
            kind = "final" if req.turn is not None else "speculative"
            started = time.monotonic()
            # A speculative lookup runs while the user still pauses, off the critical path: it gets a longer box.
            # A turn that waits for it is held to its own time box by the session's clock (RelaySession.tick).
            box_s = timeout_s if req.turn is not None else max(timeout_s, SPECULATIVE_TIMEOUT_S)
            try:
                async with asyncio.timeout(box_s):
                    context = await provider.retrieve(req.query, session_id=self.admission.session_id, kb=kb)
            except TimeoutError:
                status = "timeout"
                logger.warning(
                    "%s context lookup over %d ms; answering without context", kind, round(box_s * 1000)
                )
            except Exception as exc:
                status = "error"
                logger.warning("context lookup failed (%s); answering without context", exc)
            elapsed = time.monotonic() - started
            m.context_outcomes.labels(status).inc()
            m.context_latency.labels(kind).observe(elapsed)
            actions = self.session.on_context(req, context, status, elapsed * 1000.0, time.monotonic())
            await self._dispatch(actions)

    async def _timer(self) -> None:
        session = self.session
        drain_until: float | None = None
        while True:
            now = time.monotonic()
            if drain_until is None and self.drain_requested.is_set():
                drain_until = now + self._drain_grace_s
                await self._dispatch(session.shutdown(now))
            if drain_until is not None and (not session.busy or now >= drain_until):
                await self._dispatch(session.close(1001, "server_shutdown", "the relay is shutting down"))
                return
            await self._dispatch(session.tick(now))
            if session.closed:
                return  # the client writer sends the close and ends the session
            wake = session.next_deadline() - time.monotonic()
            wake = max(0.005, min(wake, 0.05 if drain_until is not None else 1.0))
            if drain_until is not None:
                await asyncio.sleep(wake)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake):
                    await self._wake.wait()
            self._wake.clear()

    async def _lease_renewer(self) -> None:
        limiter = self.state.limiter
        user, sid = self.admission.principal.user_id, self.admission.session_id
        period = max(0.5, self.state.settings.session_lease_s / 3.0)
        while True:
            await asyncio.sleep(period)
            try:
                if not await limiter.renew_session(user, sid):
                    logger.warning("session lease was lost; the slot may be counted again")
            except Exception as exc:
                logger.warning("lease renewal failed: %s", type(exc).__name__)
