"""The session's transcription jobs (pure; ``parley.local.protocol`` owns one ``Transcription``).

Every ``Transcribe`` effect has a job number and its result comes back with it (``result``). A job is a turn's
``Partial`` (the speech so far) or an item's final transcript. A final can be served by the turn's running partial
that covers all of its audio (``final_from``): it waits for that result instead of queueing another run on the
single STT worker, and runs on its own if the partial fails. ``pending`` holds the items whose final transcript is
not in yet (a response waits for those among its inputs).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from parley.local.effects import Transcribe
from parley.local.session_config import SessionConfig
from parley.local.turn import Partial


@dataclass(frozen=True, slots=True)
class Heard:
    """What a result means."""

    item_id: str
    text: str | None  # None: the transcription failed
    partial: Partial | None  # the turn's partial it was
    final: bool  # it is the item's final transcript


@dataclass(frozen=True, slots=True)
class _Job:
    item_id: str
    partial: Partial | None


class Transcription:
    def __init__(self) -> None:
        self.pending: set[str] = set()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._finals_on: dict[
            int, tuple[str, bytes]
        ] = {}  # partial's job -> the final (item, audio) it serves

    def final(self, item_id: str, pcm: bytes, cfg: SessionConfig) -> Transcribe:
        """Run the final transcript of item ``item_id``."""
        self.pending.add(item_id)
        return self._job(next(self._ids), _Job(item_id, None), pcm, cfg)

    def final_from(self, item_id: str, pcm: bytes, partial: Partial) -> None:
        """The final transcript of ``item_id`` (audio ``pcm``) is the running ``partial``'s."""
        self.pending.add(item_id)
        self._finals_on[partial.job] = (item_id, pcm)

    def partial(
        self, item_id: str, pcm: bytes, end: int, pause: int | None, cfg: SessionConfig
    ) -> tuple[Partial, Transcribe]:
        """Transcribe the speech of turn ``item_id`` so far (up to input offset ``end``, started in ``pause``)."""
        partial = Partial(next(self._ids), end, pause)
        return partial, self._job(partial.job, _Job(item_id, partial), pcm, cfg)

    def result(self, job: int, text: str | None, cfg: SessionConfig) -> tuple[Heard | None, list[Transcribe]]:
        """A job's text (None: it failed): what it means (None: nothing, the job is unknown), and the final to run
        when the partial a final waited for failed."""
        j = self._jobs.pop(job, None)
        if j is None:
            return None, []
        if j.partial is None:
            self.pending.discard(j.item_id)
            return Heard(j.item_id, text, None, True), []
        waiting = self._finals_on.pop(job, None)
        if waiting is not None and text is None:
            return Heard(j.item_id, None, j.partial, False), [self.final(*waiting, cfg)]
        if waiting is not None:
            self.pending.discard(j.item_id)
        return Heard(j.item_id, text, j.partial, waiting is not None), []

    def _job(self, n: int, job: _Job, pcm: bytes, cfg: SessionConfig) -> Transcribe:
        self._jobs[n] = job
        tx = cfg.transcription  # None: no transcription events, but the LLM still needs the words
        return Transcribe(n, job.item_id, pcm, cfg.language, tx.prompt if tx else None)
