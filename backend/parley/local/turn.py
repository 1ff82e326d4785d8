"""The user's turn: from ``speech_started`` until it is answered or the next speech begins. Pure data and the
decisions about its partial transcripts; ``parley.local.protocol`` owns the one current ``Turn``.

Phases: ``SPEAKING`` (the VAD's latest frame is speech), ``PAUSED`` (speech in progress, the latest frame below
threshold: the user may have finished), ``COMMITTED`` (its audio is a conversation item; not answered yet),
``ANSWERED`` (a response was started after it: nothing more is speculated for it).

Partial transcripts, so the final one is ready (or nearly) at ``speech_stopped``:
- At the onset of every pause the speech so far is transcribed at once. If the pause is the end of the turn, that
  transcript is done (or running) when ``speech_stopped`` fires ``silence_duration_ms`` later and the final reuses
  it; its words are what the early answer is speculated on, while still in that pause (``Partial.pause``).
- Every ``interval`` seconds (0 = off) the growing utterance is transcribed again (its growth goes out as
  ``...input_audio_transcription.delta``); never inside a pause (the pause-onset run covers it) and never while
  another run of the turn is in flight, so the final waits at most for the run already on the STT worker. A pause
  onset during a run asks for another run as soon as it ends (``kick``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIN_PARTIAL_MS = 300


class TurnPhase(enum.Enum):
    SPEAKING = "speaking"
    PAUSED = "paused"
    COMMITTED = "committed"
    ANSWERED = "answered"


@dataclass(frozen=True, slots=True)
class Partial:
    """A transcription of the turn so far, running or done."""

    job: int
    end: int  # absolute input offset it covers up to
    pause: int | None  # the pause it was started in (None: during speech)


@dataclass(slots=True)
class Turn:
    item_id: str
    start: int  # absolute input offset of its audio
    phase: TurnPhase = TurnPhase.SPEAKING
    pauses: int = 0  # pause onsets so far
    pause: int | None = None  # the pause the user is in (its number), None while speaking
    words: str | None = None  # the latest pause transcript, while it may still be what is answered
    stopped_at: float | None = None  # clock seconds of speech_stopped
    inflight: Partial | None = None
    done: tuple[int, str] | None = None  # (end covered, text) of the latest finished partial
    kick: bool = False  # a pause began while a partial ran: run another at once when it ends
    due: float | None = None  # clock seconds of the next periodic partial
    shown: str = ""  # what the transcription deltas have shown

    @property
    def speaking(self) -> bool:
        """Speech in progress (the VAD has not ended it)."""
        return self.phase in (TurnPhase.SPEAKING, TurnPhase.PAUSED)

    def enter_pause(self) -> bool:
        """The latest frame fell below threshold. True: transcribe the speech so far now."""
        self.phase = TurnPhase.PAUSED
        self.pauses += 1
        self.pause = self.pauses
        if self.inflight is not None:
            self.kick = True
            return False
        return True

    def resume(self) -> None:
        """Speech again after a pause: its words are not the end of the turn."""
        self.phase = TurnPhase.SPEAKING
        self.pause = None
        self.words = None

    def commit(self) -> None:
        self.phase = TurnPhase.COMMITTED
        self.due = None
        self.kick = False

    def answered(self) -> None:
        self.words = None
        if self.phase is TurnPhase.COMMITTED:
            self.phase = TurnPhase.ANSWERED

    def periodic_due(self, now: float, interval: float) -> bool:
        """The periodic partial's time has come: True to run one now. Inside a pause it waits another interval
        (the pause-onset run covers the pause)."""
        if self.due is None or now < self.due or self.inflight is not None:
            return False
        if self.phase is TurnPhase.PAUSED:
            self.due = now + interval
            return False
        self.due = None
        return True

    def started(self, partial: Partial) -> None:
        self.inflight = partial
        self.kick = False
        self.due = None

    def finished(self, partial: Partial, text: str | None) -> bool:
        """A partial ended (``text`` None: it failed). True when it was made in the pause the user is still in."""
        if self.inflight == partial:
            self.inflight = None
        if text is None:
            return False
        self.done = (partial.end, text)
        return partial.pause is not None and partial.pause == self.pause

    def reusable(self, end: int) -> str | Partial | None:
        """At commit: the finished transcript (str) or the running partial that covers the audio up to ``end``."""
        if self.done is not None and self.done[0] >= end:
            return self.done[1]
        if self.inflight is not None and self.inflight.end >= end:
            return self.inflight
        return None

    def delta(self, text: str) -> str | None:
        """What a transcription delta shows of ``text`` that the previous ones did not (None: nothing new)."""
        if not self.speaking or not text.startswith(self.shown) or len(text) <= len(self.shown):
            return None
        shown, self.shown = self.shown, text
        return text[len(shown) :]
