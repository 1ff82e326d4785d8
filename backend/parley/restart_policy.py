"""When to restart a child process that died: exponential backoff, and a cap on restarts per window. Pure (no I/O,
no clock of its own): the caller passes the time.

Each restart counts for ``window_s`` seconds. The delay before a restart doubles with every restart still counted
(``base_s``, ``2 * base_s``, ... capped at ``max_s``), so a child that has run a whole window without dying starts
again at ``base_s``. When ``max_restarts`` restarts are already counted, the answer is to give up: a crash loop must
not spin.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    base_s: float
    max_s: float
    max_restarts: int
    window_s: float
    _restarts: deque[float] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < self.base_s or self.max_restarts < 0 or self.window_s <= 0:
            raise ValueError(f"inconsistent restart policy: {self}")

    def recent(self, now: float) -> int:
        """Restarts counted at ``now`` (those of the last ``window_s`` seconds)."""
        while self._restarts and self._restarts[0] <= now - self.window_s:
            self._restarts.popleft()
        return len(self._restarts)

    def on_exit(self, now: float) -> float | None:
        """The child died at ``now``: the seconds to wait before restarting it, or ``None`` to give up."""
        count = self.recent(now)
        if count >= self.max_restarts:
            return None
        delay = min(self.max_s, self.base_s * 2.0 ** min(count, 64))
        self._restarts.append(now + delay)  # counted from the restart itself
        return delay
