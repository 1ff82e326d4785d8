"""``turn_detection.idle_timeout_ms``: when the user says nothing for that long after an answer has been played,
the server commits the silence and answers anyway (GA: ``input_audio_buffer.timeout_triggered``). Pure, no I/O.

The clock is the input audio itself, as for the VAD's ``silence_duration_ms``: positions are absolute byte offsets
of the input stream (ms * ``BYTES_PER_MS``), so a client streaming its microphone in real time measures real time,
and a test appends silence instead of sleeping. The count starts where the last answer's audio stops playing: the
input position when its first audio went out plus its length (a client plays audio as it comes), or where it ended
if that is later (text answers: where it ended). Speech, a manual commit or a new response stop the count; the
next answer's end starts it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.realtime.audio import BYTES_PER_MS


@dataclass(slots=True)
class IdleTimer:
    since: int | None = None
    """Input position where the silence being counted began (None: not counting)."""
    _audio_at: int | None = None

    def audio_started(self, pos: int) -> None:
        """The running answer's first audio went out at input position ``pos``."""
        if self._audio_at is None:
            self._audio_at = pos

    def answer_ended(self, pos: int, audio_ms: int) -> None:
        """An answer ended at input position ``pos`` with ``audio_ms`` of audio: count from when it stops playing."""
        played_until = (self._audio_at + audio_ms * BYTES_PER_MS) if self._audio_at is not None else pos
        self.since = max(pos, played_until)
        self._audio_at = None

    def stop(self) -> None:
        self.since = None
        self._audio_at = None

    def due(self, pos: int, timeout_ms: int | None) -> int | None:
        """The start of the silence if ``timeout_ms`` of it has passed by input position ``pos``, else None."""
        if self.since is None or timeout_ms is None or timeout_ms <= 0:
            return None
        return self.since if pos - self.since >= timeout_ms * BYTES_PER_MS else None
