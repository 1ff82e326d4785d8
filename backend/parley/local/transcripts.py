"""Transcribing the speech in progress, so the final transcript is ready (or nearly) at ``speech_stopped``.

Per utterance (from ``speech_started`` to ``speech_stopped``) one loop, run as a task of the session's TaskGroup:

- At the onset of every pause (the VAD's latest frame below threshold) it transcribes everything said so far at
  once. If the pause turns out to be the end of the turn, that transcript is done (or running) when
  ``speech_stopped`` fires ``silence_duration_ms`` later, and the final re-uses it instead of queueing a new run
  on the single STT worker thread.
- Optionally, every ``stt_partial_interval_ms`` (0 = off) it re-transcribes the growing utterance and emits what
  extends the previous text as ``...input_audio_transcription.delta``. A periodic run is never started inside a
  pause (the pause-onset run covers it) and never while another run of the utterance is in flight (the loop is
  sequential), so the final waits at most for the one run that is already on the worker.

``on_paused_text(item_id, text)`` is told each transcript started in a pause that finished with the user still in
that pause (the preemptive generation starts from it), and the client gets it whole as ``parley.pause_transcript``
(the relay's speculative context lookup starts from it); ``on_resumed(item_id)`` is told when speech resumes after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from parley.local.engines import SpeechToText
from parley.local.session_state import SessionState, Transcribe
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS

logger = logging.getLogger(__name__)

MIN_PARTIAL_MS = 300
Emit = Callable[[list[dict[str, Any]]], Awaitable[None]]


@dataclass(slots=True)
class Utterance:
    item_id: str
    start: int  # absolute byte offset
    stopped: bool = False
    paused: bool = False  # inside a pause we already started a transcription for
    pauses: int = 0  # pause onsets so far: a transcript started in an earlier pause is not this pause's
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    done: tuple[int, str] | None = None  # (end offset covered, text)
    inflight: tuple[int, asyncio.Future[str | None]] | None = None


class Transcripts:
    def __init__(
        self,
        state: SessionState,
        stt: SpeechToText,
        emit: Emit,
        *,
        interval_ms: int,
        on_paused_text: Callable[[str, str], None],
        on_resumed: Callable[[str], None],
    ) -> None:
        self._state = state
        self._stt = stt
        self._emit = emit
        self._interval = interval_ms / 1000.0 if interval_ms > 0 else None
        self._on_paused_text = on_paused_text
        self._on_resumed = on_resumed
        self._utterances: dict[str, Utterance] = {}

    def begin(self, item_id: str, start: int) -> Utterance:
        utt = Utterance(item_id, start)
        self._utterances[item_id] = utt
        return utt

    def on_audio(self) -> None:
        """After each append: notice the onset of a pause (kick a transcription) or the resumption of speech."""
        utt = self._utterances.get(self._state.speech_item_id or "")
        if utt is None:
            return
        if not self._state.speech_paused():
            if utt.paused:
                utt.paused = False
                self._on_resumed(utt.item_id)
        elif not utt.paused:
            utt.paused = True
            utt.pauses += 1
            utt.kick.set()
            logger.debug("pause %d of %s at %d ms", utt.pauses, utt.item_id, self._state.buffer.end_ms)

    async def final_text(self, t: Transcribe) -> str:
        """The transcript of a committed item: a finished or running transcription that covers it, else a new run."""
        utt = self._utterances.pop(t.item_id, None)
        if utt is not None:
            utt.stopped = True
            end = utt.start + len(t.pcm)
            if utt.done is not None and utt.done[0] >= end:
                logger.info("final transcript of %s: reused a finished partial", t.item_id)
                return utt.done[1]
            if utt.inflight is not None and utt.inflight[0] >= end:
                text = await utt.inflight[1]
                if text is not None:
                    logger.info("final transcript of %s: awaited the running partial", t.item_id)
                    return text
            logger.info("final transcript of %s: no partial covers it", t.item_id)
        return await self._stt.transcribe(t.pcm, language=t.language, prompt=t.prompt)

    async def run(self, utt: Utterance) -> None:
        """The loop of one utterance (see the module docstring)."""
        shown = ""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await utt.kick.wait()
                kicked = utt.kick.is_set()
                utt.kick.clear()
                if utt.stopped or self._state.speech_item_id != utt.item_id:
                    return
                if not kicked and utt.paused:
                    continue  # the pause-onset run covers this pause
                pause = utt.pauses if utt.paused else -1
                text = await self._transcribe(utt)
                if text is None:
                    continue
                tx = self._state.config.transcription
                if utt.paused and utt.pauses == pause:  # made in this pause, with no speech since
                    self._on_paused_text(utt.item_id, text)
                    if tx is not None and text.strip():
                        await self._emit([ev.parley_pause_transcript(utt.item_id, text.strip())])
                if utt.stopped:
                    return
                text = text.strip()
                if tx is not None and text.startswith(shown) and len(text) > len(shown):
                    await self._emit([ev.transcription_delta(utt.item_id, text[len(shown) :])])
                    shown = text
        finally:
            if not utt.stopped:
                self._utterances.pop(utt.item_id, None)

    async def _transcribe(self, utt: Utterance) -> str | None:
        end = self._state.buffer.end
        pcm = self._state.buffer.take(utt.start, end)
        if len(pcm) < MIN_PARTIAL_MS * BYTES_PER_MS:
            return None
        tx = self._state.config.transcription
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        utt.inflight = (end, fut)
        text: str | None = None
        started = time.monotonic()
        try:
            text = await self._stt.transcribe(
                pcm, language=tx.language if tx else None, prompt=tx.prompt if tx else None
            )
        except Exception as exc:
            logger.info("partial transcription failed: %r", exc)
        finally:
            if not fut.done():
                fut.set_result(text)
            utt.inflight = None
        logger.debug(
            "partial of %s (%d ms audio) in %.0f ms: %r",
            utt.item_id,
            len(pcm) // BYTES_PER_MS,
            (time.monotonic() - started) * 1000,
            text,
        )
        if text is not None:
            utt.done = (end, text)
        return text
