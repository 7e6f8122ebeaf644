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
    """Open windows of one partition: accumulators by window start, then by key."""

    size_s: float
    grace_s: float
    watermark: float = -math.inf
    open: dict[float, dict[K, A]] = field(default_factory=dict)

    def start_of(self, t: float) -> float:
        return math.floor(t / self.size_s) * self.size_s

    def closes_at(self, start: float) -> float:
        return start + self.size_s + self.grace_s

    def is_late(self, t: float) -> bool:
        """True when the window that `t` falls in has already closed."""
        return self.open_start(t) is None

    def open_start(self, t: float) -> float | None:
        """The start of the window that `t` falls in, or None when that window has closed."""
        start = self.start_of(t)
        return start if start + self.size_s + self.grace_s > self.watermark else None

    def add(self, key: K, t: float, fold: Callable[[A | None], A]) -> tuple[K, float] | None:
        """Fold an event at time `t` into its window; None when the event is late."""
        start = self.open_start(t)
        if start is None:
            return None
        self.fold_at(key, start, t, fold)
        return key, start

    def fold_at(self, key: K, start: float, t: float, fold: Callable[[A | None], A]) -> None:
        """Fold an event at time `t` into the window at `start`, found open by `open_start`."""
        accumulators = self.open.get(start)
        if accumulators is None:
            accumulators = self.open[start] = {}
        accumulators[key] = fold(accumulators.get(key))
        if t > self.watermark:
            self.watermark = t

    def get(self, key: K, start: float) -> A | None:
        """The accumulator of an open window, or None."""
        return self.open.get(start, {}).get(key)

    def advance(self, watermark: float) -> None:
        """Move the watermark forward without an event (a silent partition's timer)."""
        self.watermark = max(self.watermark, watermark)

    def close_due(self) -> list[tuple[K, float, A]]:
        """Remove and return the windows the watermark has passed, oldest first."""
        due = sorted(start for start in self.open if self.closes_at(start) <= self.watermark)
        return [(key, start, acc) for start in due for key, acc in self.open.pop(start).items()]
