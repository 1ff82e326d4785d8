"""Connections whose request head has not fully arrived yet, counted in all and per client IP, with caps.

A slow or silent client holds a socket and a protocol object for as long as it is let; ``PendingHeads`` bounds how
many such connections the relay holds at once, so slowloris costs at most ``max_total`` sockets (and
``max_per_ip`` per address) for at most the handshake time-out each.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PendingHeads:
    max_total: int
    max_per_ip: int
    total: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)

    def enter(self, ip: str) -> str | None:
        """Count one more pending connection from ``ip``; or, when a cap is reached, say which (nothing counted)."""
        if self.total >= self.max_total:
            return "too many connections are waiting for their request"
        held = self.per_ip.get(ip, 0)
        if held >= self.max_per_ip:
            return "too many connections from this address are waiting for their request"
        self.total += 1
        self.per_ip[ip] = held + 1
        return None

    def leave(self, ip: str) -> None:
        self.total -= 1
        held = self.per_ip[ip] - 1
        if held:
            self.per_ip[ip] = held
        else:
            del self.per_ip[ip]
