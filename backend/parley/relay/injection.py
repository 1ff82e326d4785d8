"""The one context item the relay keeps in the upstream conversation, and the speculative lookups that fill it
while the user is still pausing. Pure: it takes events and returns actions; ``RelaySession`` owns it.

Rules:
- At most one context item is in the upstream conversation at any time: a new one replaces the old
  (``conversation.item.delete`` then ``conversation.item.create``), so old passages never pile up.
- An item is only (re)written when what it would say changes (``Context.key``: the chunk ids, or "nothing
  found"), so a speculative injection that the final lookup confirms stays as it is, and the upstream's
  speculative answer, which already includes it, can be adopted.
- Speculation: the transcript of the speech so far at the onset of a pause (``parley.pause_transcript`` from
  Parley's local server; else the transcription deltas, e.g. OpenAI's) starts a lookup (one at a time per session; a newer partial waits for the running one and then replaces it). Its result
  is injected at once, during the pause, unless the utterance is already over. At the final transcript a finished
  speculative lookup for the same words is reused; a running one for the same words is awaited; otherwise the
  relay looks up again. Whatever the relay answers with, the item was rewritten for this turn's final lookup (or
  removed when it failed), so nothing stale ever reaches an answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from parley.relay import wire
from parley.relay.actions import FetchContext, ToUpstream
from parley.relay.context import Context, build_query, context_text, display_source, same_query, snippet

logger = logging.getLogger(__name__)

ITEM_PREFIX = "parley_ctx_"
EVENT_PREFIX = "parley_ctx_evt_"


@dataclass(slots=True)
class Lookup:
    """A finished lookup."""

    query: str
    context: Context | None  # None: it failed or ran out of time
    status: str  # ok | empty | off | timeout | error
    retrieval_ms: float

    @property
    def key(self) -> tuple[str, ...]:
        return self.context.key if self.context is not None else ()


class ContextItems:
    def __init__(self, *, speculative: bool, max_chars: int = 600) -> None:
        self.speculative = speculative
        self.max_chars = max_chars
        self.injected_id: str | None = None
        self.injected_key: tuple[str, ...] = ()
        self._n = 0
        # The utterance being speculated on, its text so far, and the lookups for it.
        self._item: str | None = None
        self._partial = ""
        self._previous: str | None = None
        self._inflight: str | None = None
        self._wanted: str | None = None
        self._result: Lookup | None = None
        self._finished: set[str] = set()
        self._pause_transcripts = False  # the upstream sends parley.pause_transcript (Parley's local server)

    @staticmethod
    def owns(item_id: object) -> bool:
        return isinstance(item_id, str) and item_id.startswith(ITEM_PREFIX)

    @staticmethod
    def owns_event(event_id: object) -> bool:
        return isinstance(event_id, str) and event_id.startswith(EVENT_PREFIX)

    # --- speculation --------------------------------------------------------------------------------------

    def on_partial(self, item_id: str, delta: str, previous: str | None) -> list[FetchContext]:
        """A transcription delta of ``item_id``: maybe start a speculative lookup for the text so far. Ignored
        once the upstream has shown it sends whole pause transcripts (its deltas are then mid-speech partials)."""
        if self._pause_transcripts or not self._start(item_id):
            return []
        return self._want(item_id, self._partial + delta, previous)

    def on_pause_text(self, item_id: str, text: str, previous: str | None) -> list[FetchContext]:
        """The whole transcript so far, made at the onset of a pause (``parley.pause_transcript``)."""
        self._pause_transcripts = True
        if not self._start(item_id):
            return []
        return self._want(item_id, text, previous)

    def _start(self, item_id: str) -> bool:
        if not self.speculative or not item_id or item_id in self._finished:
            return False
        if item_id != self._item:
            self._item, self._partial, self._result, self._wanted = item_id, "", None, None
        return True

    def _want(self, item_id: str, text: str, previous: str | None) -> list[FetchContext]:
        self._partial = text
        query = build_query(text, previous)
        if not query.strip():
            return []
        if self._inflight is not None:
            if not same_query(query, self._inflight):
                self._wanted = query  # looked up when the running one ends
            return []
        if self._result is not None and same_query(query, self._result.query):
            return []
        self._inflight = query
        return [FetchContext(None, query, item_id=item_id)]

    def speculative_done(self, req: FetchContext, lookup: Lookup, *, turn_open: bool) -> list[FetchContext]:
        """A speculative lookup ended. Returns the next lookup to run, if a newer partial is waiting."""
        self._inflight = None
        if req.item_id != self._item:
            return []
        self._result = lookup
        wanted, self._wanted = self._wanted, None
        if wanted is not None and not same_query(wanted, lookup.query) and turn_open:
            self._inflight = wanted
            return [FetchContext(None, wanted, item_id=req.item_id)]
        return []

    @property
    def speculated(self) -> str | None:
        """The words of the last finished speculative lookup of the utterance in progress (None: none yet)."""
        return self._result.query if self._result is not None and self._item is not None else None

    def may_inject_early(self, req: FetchContext) -> bool:
        """Inject a speculative result now? Only for the utterance in progress, never after it ended."""
        return req.item_id == self._item and req.item_id not in self._finished

    def finish(self, item_id: str | None) -> None:
        """The utterance ended (final transcript, failure, or a typed turn): no more speculation for it."""
        if item_id:
            self._finished.add(item_id)
            if len(self._finished) > 64:
                self._finished = {item_id}
        if item_id is None or item_id == self._item:
            self._item, self._partial, self._wanted = None, "", None

    def reusable(self, item_id: str | None, query: str) -> Lookup | None:
        """A finished speculative lookup of ``item_id`` for these words."""
        res = self._result
        if res is not None and item_id is not None and item_id == self._item and same_query(res.query, query):
            return res
        return None

    def running_for(self, item_id: str | None, query: str) -> bool:
        """A speculative lookup for these words is running (the turn can wait for it instead of a new one)."""
        return (
            item_id is not None
            and item_id == self._item
            and self._inflight is not None
            and same_query(self._inflight, query)
        )

    # --- the item -----------------------------------------------------------------------------------------

    def apply(self, lookup: Lookup) -> list[ToUpstream]:
        """Make the upstream's context item say what ``lookup`` found (or remove it when the lookup failed)."""
        key = lookup.key
        if key == self.injected_key:
            return []
        out: list[ToUpstream] = []
        if self.injected_id is not None:
            delete = wire.client_event_id("conversation.item.delete", EVENT_PREFIX, item_id=self.injected_id)
            out.append(ToUpstream(delete))
            self.injected_id = None
        self.injected_key = key
        if key and lookup.context is not None:
            self._n += 1
            self.injected_id = f"{ITEM_PREFIX}{self._n}"
            text = context_text(lookup.context, max_chars=self.max_chars, query=lookup.query)
            out.append(
                ToUpstream(wire.system_item(text, item_id=self.injected_id, event_prefix=EVENT_PREFIX))
            )
        return out

    def forget(self, item_id: str) -> None:
        """The upstream dropped our item (deleted by someone else, or the conversation was reset)."""
        if item_id == self.injected_id:
            self.reset()

    def reset(self) -> None:
        """The upstream's conversation no longer holds our item (a new upstream, a refused item event)."""
        self.injected_id, self.injected_key = None, ()


def context_event(
    turn_id: int, query: str, lookup: Lookup, kb: str, speculative: bool, wait_ms: float | None
) -> str:
    """``parley.context``: what the relay found for a turn, told to the client before the answer."""
    context = lookup.context
    passages = context.passages if context is not None else []
    best = context.best_score if context is not None else None
    return wire.parley_event(
        "parley.context",
        turn_id=turn_id,
        query=query,
        status=lookup.status,
        speculative=speculative,
        retrieval_ms=round(lookup.retrieval_ms, 1),
        wait_ms=None if wait_ms is None else round(wait_ms, 1),
        kb=kb,
        best_score=None if best is None else round(best, 3),
        sources=[
            {
                "source": display_source(p.source),
                "title": p.title,
                "heading": p.headings,
                "score": round(p.score, 3),
                "snippet": snippet(p.text),
            }
            for p in passages
        ],
    )
