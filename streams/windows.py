"""Event-time tumbling windows with a grace period.

A window [start, start + size) accepts events until the watermark (the highest event time seen
on the partition) reaches start + size + grace; it is then closed and emitted, and an event for
it is late. Lateness depends only on the events before it, never on how they were batched, so a
replay yields the same windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")


@dataclass
class TumblingWindows(Generic[K, A]):
    """Open windows of one partition, keyed by (key, window start)."""

    size_s: float
    grace_s: float
    watermark: float = -math.inf
    open: dict[tuple[K, float], A] = field(default_factory=dict)

    def start_of(self, t: float) -> float:
        return math.floor(t / self.size_s) * self.size_s

    def closes_at(self, start: float) -> float:
        return start + self.size_s + self.grace_s

    def is_late(self, t: float) -> bool:
        """True when the window that `t` falls in has already closed."""
        return self.closes_at(self.start_of(t)) <= self.watermark

    def add(self, key: K, t: float, fold: Callable[[A | None], A]) -> tuple[K, float] | None:
        """Fold an event at time `t` into its window; None when the event is late."""
        if self.is_late(t):
            return None
        slot = (key, self.start_of(t))
        self.open[slot] = fold(self.open.get(slot))
        if t > self.watermark:
            self.watermark = t
        return slot

    def advance(self, watermark: float) -> None:
        """Move the watermark forward without an event (a silent partition's timer)."""
        self.watermark = max(self.watermark, watermark)

    def close_due(self) -> list[tuple[K, float, A]]:
        """Remove and return the windows the watermark has passed, oldest first."""
        due = [slot for slot in self.open if self.closes_at(slot[1]) <= self.watermark]
        due.sort(key=lambda slot: slot[1])
        return [(key, start, self.open.pop((key, start))) for key, start in due]
