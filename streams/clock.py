"""A partition's event time: how it moves, how one wrong clock is told from a jump, and how
silence moves it.

A live partition (its time near the wall clock) that falls silent keeps time by the wall clock,
so windows of sensors that stopped close and stale sensors are noticed; a replay of the past
does not, so that what it replays next is not made late.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from schemas.contract import Rejected, iso
from streams.effects import Source

log = logging.getLogger(__name__)


def is_live(clock: float, wall_now: float, within_s: float) -> bool:
    """Whether a partition whose event time is `clock` follows the wall clock (not a replay)."""
    return clock >= wall_now - within_s


@dataclass
class Skew:
    """Tells one clock that runs wrong from a partition's time that jumped; kept with the
    partition's state (a stage's `Value`).

    A reading more than `max_s` ahead of its partition's clock moves it only when the broker's
    clock has moved on as far since the partition's clock last moved (a feed resuming after a
    pause), when another key's reading ran as far ahead before it (a recording with a gap), or,
    where the stage can say so from its state, when no other key is followed there (there is no
    one to make late). Otherwise it is a wild clock's: the stage dead-letters it, and this
    remembers it."""

    moved_at: float | None = None  # the broker's time of the event that last moved the clock
    ahead: dict[str, float] = field(default_factory=dict)  # keys far ahead, alone, and when

    def allows(self, key: str, t: float, clock: float, source: Source, max_s: float,
               alone: Callable[[], bool] = lambda: False) -> bool:
        """Whether a reading of `key` at `t` may move the partition's `clock` (a newer time)."""
        if t <= clock + max_s or clock == -math.inf:
            self.moved_at = source.timestamp or self.moved_at
            return True
        paused = source.timestamp is not None and self.moved_at is not None \
            and source.timestamp - self.moved_at >= t - clock - max_s
        if paused or any(k != key and abs(t - other) <= max_s for k, other in self.ahead.items()) or alone():
            self.ahead.clear()
            self.moved_at = source.timestamp or self.moved_at
            return True
        self.ahead[key] = t
        return False

    @staticmethod
    def kept_before(meta: dict[str, bytes]) -> Skew | None:
        """The record as the previous version kept it, two fields of the meta hash, or None."""
        if "skew" in meta or ("clock_moved_at" not in meta and "ahead" not in meta):
            return None
        moved_at = float(meta.get("clock_moved_at", "-inf"))
        return Skew(moved_at if moved_at != -math.inf else None, orjson.loads(meta.get("ahead", b"{}")))

    @staticmethod
    def wild(key: str, t: float, clock: float) -> Rejected:
        return Rejected(f"event_time {iso(t)} of {key} is {t - clock:,.0f} s ahead of its partition's time "
                        f"{iso(clock)}, and no other sensor is: a clock that runs wrong", "ahead_of_partition")
