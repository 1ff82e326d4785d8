"""The upstreams of one provider (e.g. several local voice servers) and which one a session should use. Pure.

Load is the number of sessions this relay has open on an upstream. Health is learnt from what happens: a connect
that fails, or a session the upstream drops, marks it down for ``cooldown_s``; a connect that works, or a health
check that answers, marks it up. ``candidates`` orders the upstreams to try: the healthy ones, least loaded first
(ties in the configured order); then, only when none is healthy, the ones marked down, the soonest to recover
first, so a single upstream that restarts is tried again rather than refused for the cooldown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Member:
    url: str
    load: int = 0
    down_until: float = 0.0

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


class Pool:
    def __init__(self, urls: Sequence[str], *, cooldown_s: float = 5.0) -> None:
        if not urls:
            raise ValueError("a pool needs at least one upstream URL")
        self.members = [Member(u) for u in dict.fromkeys(urls)]
        self._by_url = {m.url: m for m in self.members}
        self.cooldown_s = cooldown_s

    def candidates(self, now: float, exclude: Iterable[str] = ()) -> list[str]:
        """The upstreams to try, in order (see the module doc); ``exclude`` are left out."""
        skip = set(exclude)
        members = [m for m in self.members if m.url not in skip]
        healthy = [m for m in members if m.healthy(now)]
        if healthy:
            order = sorted(healthy, key=lambda m: m.load)  # stable: ties keep the configured order
        else:
            order = sorted(members, key=lambda m: m.down_until)
        return [m.url for m in order]

    def acquire(self, url: str) -> None:
        self._by_url[url].load += 1

    def release(self, url: str) -> None:
        member = self._by_url[url]
        member.load = max(0, member.load - 1)

    def mark_down(self, url: str, now: float) -> None:
        self._by_url[url].down_until = now + self.cooldown_s

    def mark_up(self, url: str) -> None:
        self._by_url[url].down_until = 0.0

    def load(self, url: str) -> int:
        return self._by_url[url].load


def split_urls(value: str) -> list[str]:
    """``PARLEY_LOCAL_REALTIME_URL``: one URL, or several separated by commas (blanks ignored)."""
    return [u.strip() for u in value.split(",") if u.strip()]
