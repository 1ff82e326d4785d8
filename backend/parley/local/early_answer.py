"""When to speculate, and on what (pure; ``parley.local.protocol`` owns one ``EarlyAnswer``).

A transcript made while the user still pauses gives the turn its ``words`` (``heard``); the answer the turn would
get now is then speculated on (``speculate``: ``parley.local.speculation`` keeps, replaces or starts it). A client
that answers turns itself (``create_response=false``, like the relay) first gets ``client_grace_ms`` to add context
for those words, which it receives as ``parley.pause_transcript``: a speculation started without it would be
replaced at once, and llama.cpp finishes reading a cancelled request's prompt before the next. Until the turn is
answered, every change of the conversation or the session re-plans (``changed``, debounced by
``REPLAN_DEBOUNCE_S`` so that a delete and a create make one re-plan; a ``response.create`` takes a waiting re-plan
first), which keeps the speculation if its plan is unchanged and replaces it if not. Speech resuming, new speech, or
final words that differ discard it (``forget``).
"""

from __future__ import annotations

from parley.local.conversation import Conversation
from parley.local.effects import Effect
from parley.local.plan import Plan
from parley.local.response_run import ResponseSpec
from parley.local.speculation import Speculations
from parley.local.turn import Turn, TurnPhase

REPLAN_DEBOUNCE_S = 0.01


class EarlyAnswer:
    def __init__(self, speculations: Speculations, *, enabled: bool, client_grace_ms: int) -> None:
        self.speculations = speculations
        self.replan_at: float | None = None  # clock seconds
        self._enabled = enabled
        self._grace = client_grace_ms / 1000.0

    def heard(self, turn: Turn, words: str, *, client_answers: bool, now: float) -> bool:
        """A transcript of ``turn`` made in the pause the user is still in. True: speculate now; False: not at all,
        or after the client's grace (a re-plan is due then)."""
        if not self._enabled or not words or turn.phase is TurnPhase.ANSWERED:
            return False
        turn.words = words
        if client_answers and self._grace > 0:
            self.replan_at = now + self._grace
            return False
        return True

    def changed(self, now: float) -> None:
        """The conversation or the session may have changed the request: re-plan shortly."""
        self.replan_at = now + REPLAN_DEBOUNCE_S

    def due(self, now: float | None) -> bool:
        """A re-plan is due by ``now`` (None: any waiting one, now)."""
        if self.replan_at is None or (now is not None and now < self.replan_at):
            return False
        self.replan_at = None
        return True

    def speculate(
        self, turn: Turn, conversation: Conversation, spec: ResponseSpec, now: float
    ) -> list[Effect]:
        """Speculate on the turn's words with ``spec``, the response the turn would get now."""
        words = turn.words
        assert words is not None
        if turn.phase is TurnPhase.PAUSED:
            # Pausing: the turn's user item will be appended at the end when it is committed.
            messages = [*conversation.llm_messages(spec.llm_instructions), {"role": "user", "content": words}]
        elif turn.phase is TurnPhase.COMMITTED and _unanswered(conversation, turn.item_id, words):
            # Committed (maybe before context items): the words stand in for its transcript, in its place.
            messages = conversation.llm_messages(spec.llm_instructions, pending={turn.item_id: words})
        else:
            return self.forget(turn, "turn over")
        return self.speculations.start(turn.item_id, words, Plan.of(spec, messages), now)

    def forget(self, turn: Turn, reason: str) -> list[Effect]:
        """``turn`` will not be answered from its words: drop them and their speculation."""
        turn.words = None
        return self.speculations.discard(turn.item_id, reason=reason)


def _unanswered(conversation: Conversation, item_id: str, words: str) -> bool:
    """The committed turn ``item_id`` may still be answered from ``words``: its transcript is pending or these words,
    and only system items (context) came after it."""
    if not conversation.has(item_id) or conversation.get(item_id).transcript not in (None, words):
        return False
    return all(item.role == "system" for item in conversation.items_after(item_id))
