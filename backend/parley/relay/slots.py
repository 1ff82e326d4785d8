"""This relay's held session slots, so a client that reconnects the moment its session ended is not refused for
the slot that ended session still holds.

The per-user concurrency cap lives in the limiter (shared by every relay instance). A session's slot is released
by the endpoint once its runtime stops: a few event-loop turns, or a Redis round trip, after the client's close.
A reconnect in that gap would find the old session still counted and get 429 although it is over. So the endpoint
books each slot here with a test for "this session is over", and admission, refused for too many sessions, first
waits (bounded) for the release of this relay's slots of that user whose sessions are over, then asks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import State

logger = logging.getLogger(__name__)

RELEASE_WAIT_S = 2.0


@dataclass(eq=False)
class Slot:
    user_id: str
    session_id: str
    over: Callable[[], bool]  # True once the client's session is over (the slot is about to be released)
    released: asyncio.Event = field(default_factory=asyncio.Event)


class SlotBook:
    def __init__(self) -> None:
        self._by_user: dict[str, set[Slot]] = {}

    def hold(self, user_id: str, session_id: str, over: Callable[[], bool]) -> Slot:
        slot = Slot(user_id, session_id, over)
        self._by_user.setdefault(user_id, set()).add(slot)
        return slot

    def released(self, slot: Slot) -> None:
        """The limiter no longer counts ``slot``: wake whoever waits for it."""
        slot.released.set()
        held = self._by_user.get(slot.user_id)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._by_user[slot.user_id]

    async def wait_for_ended(self, user_id: str, timeout_s: float = RELEASE_WAIT_S) -> bool:
        """Wait until every slot of ``user_id`` whose session is over has been released. False when there is none
        (waiting would not help) or the releases took longer than ``timeout_s``."""
        ended = [slot for slot in self._by_user.get(user_id, ()) if slot.over()]
        if not ended:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                for slot in ended:
                    await slot.released.wait()
        except TimeoutError:
            logger.warning("an ended session's slot was not released within %.1f s", timeout_s)
            return False
        return True


def slot_book(app_state: State) -> SlotBook:
    """The app's book (one per app, kept in Starlette's ``app.state``)."""
    book = getattr(app_state, "parley_slots", None)
    if not isinstance(book, SlotBook):
        book = SlotBook()
        app_state.parley_slots = book
    return book
