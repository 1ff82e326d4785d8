"""The early answer's decisions: at most one speculation per session, started, replaced, discarded or adopted.
Pure: it returns ``Speculate`` / ``Discard`` effects; the connection runs them (``parley.local.preemptive``).

With server VAD on, the transcript of the speech so far is ready soon after the onset of a pause, while the VAD
still waits ``silence_duration_ms`` to be sure the turn is over. The protocol then plans the response the turn would
get if it ended now and ``start``s a speculation of that ``Plan``. When the real response starts generating it asks
``adopt`` with its own plan: same turn (or a client's ``response.create``, which may adopt any speculation whose
request is exactly its own), same plan, not failed: it gets the speculation, whose buffered streams make exactly the
response one generated after ``speech_stopped`` would be, only earlier. Anything else discards it. A re-plan to the
same request keeps the running (or failed: not retried) speculation; another plan replaces it.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from parley.local.effects import Discard, Effect, Speculate
from parley.local.plan import Plan

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Guess:
    """A running speculation as the protocol knows it."""

    id: int
    item_id: str
    words: str  # the transcript it answers (its place in ``plan.messages`` depends on the turn)
    plan: Plan
    started: float  # clock seconds
    failed: bool = False


class Speculations:
    def __init__(self) -> None:
        self.current: Guess | None = None
        self.adopted = 0
        self.discarded = 0
        self._ids = itertools.count(1)

    def start(self, item_id: str, words: str, plan: Plan, now: float) -> list[Effect]:
        """Speculate on ``plan`` for the turn ``item_id`` heard as ``words``; keeps the current speculation if it
        has the same turn and plan, replaces it otherwise."""
        cur = self.current
        if cur is not None and cur.item_id == item_id and cur.plan == plan:
            return []
        out: list[Effect] = []
        if cur is not None:
            same_words = cur.item_id == item_id and cur.words == words
            out += self.discard(reason="plan changed" if same_words else "newer words")
        guess = Guess(next(self._ids), item_id, words, plan, now)
        self.current = guess
        logger.debug("speculating for %s on %r (%d messages)", item_id, words, len(plan.messages))
        return [*out, Speculate(guess.id, plan)]

    def discard(self, item_id: str | None = None, *, reason: str) -> list[Effect]:
        """Stop the speculation (only if it is for ``item_id``, when given)."""
        cur = self.current
        if cur is None or (item_id is not None and cur.item_id != item_id):
            return []
        self.current = None
        self.discarded += 1
        logger.debug("discarded the speculation for %s: %s", cur.item_id, reason)
        return [Discard(cur.id)]

    def keep_if_words(self, item_id: str, text: str) -> list[Effect]:
        """The final transcript of ``item_id`` is known: a speculation made from other words is of no use."""
        cur = self.current
        if cur is not None and cur.item_id == item_id and cur.words != text.strip():
            return self.discard(reason="final transcript differs")
        return []

    def failed(self, guess_id: int) -> None:
        if self.current is not None and self.current.id == guess_id:
            self.current.failed = True

    def adopt(self, item_id: str | None, plan: Plan, now: float) -> tuple[Guess | None, list[Effect]]:
        """The speculation if it made exactly this response, else None after discarding it. ``item_id`` is the turn
        that triggered an automatic response, or None for a client's ``response.create``."""
        cur = self.current
        if cur is None:
            return None, []
        if (item_id is None or cur.item_id == item_id) and cur.plan == plan and not cur.failed:
            self.current = None
            self.adopted += 1
            logger.info(
                "adopted the speculation for %s (started %.0f ms ago)",
                cur.item_id,
                (now - cur.started) * 1000,
            )
            return cur, []
        why = "failed" if cur.failed else "another turn" if cur.item_id != item_id else "plan changed"
        return None, self.discard(reason=why)
