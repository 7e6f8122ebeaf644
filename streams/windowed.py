"""Event-time tumbling windows for a stage, persisted with the partition's state."""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from schemas.contract import iso
from streams import metrics
from streams.clock import Skew, is_live
from streams.effects import Effects, Source
from streams.reference import Reference
from streams.settings import Settings
from streams.stage import Stage
from streams.table import Table, Value
from streams.windows import TumblingWindows

log = logging.getLogger(__name__)


class WindowedStage(Stage):
    """A stage that folds events into event-time tumbling windows and closes them in order.

    Windows close at the event that moves the watermark past their end plus grace, before the
    next event is applied, so what a stage says and when never depends on how events were
    batched. Open windows and the watermark are part of the partition's Redis state, so a
    restarted worker resumes the very windows it was filling. Keys are strings; accumulators
    are JSON and stay small: what an accumulator must remember per event (which events it
    has counted) is kept beside it, one Redis field per event, so that a batch writes what it
    changed and not everything the window has seen.
    """

    hashes: ClassVar[tuple[str, ...]] = ("seen",)
    # The accumulators of the open windows, by (window start, key).
    open_windows = Table(object, key=(float, str), hash="open")
    watermark = Value(float, -math.inf)  # the windows' watermark as of the last batch
    skew = Value(Skew, Skew())
    # Whether event times are the clocks of the sensors that read them, one of which may run wrong
    # (Skew); not for a stage fed by other partitions' records, whose arrival can run apart.
    sensor_clocks: ClassVar[bool] = True

    def __init__(self, partition: int, settings: Settings, reference: Reference):
        super().__init__(partition, settings, reference)
        self.windows: TumblingWindows[str, Any] = TumblingWindows(*self.window_of(settings))
        self._touched: set[tuple[str, float]] = set()
        self._seen: dict[float, set[str]] = {}  # by window start: fields of the events counted once
        self._newly_seen: set[str] = set()

    @classmethod
    def window_of(cls, settings: Settings) -> tuple[float, float]:
        """The stage's window size and grace period, seconds."""
        return settings.window_s, settings.grace_s

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.skew = Skew.kept_before(hashes.get("meta", {})) or self.skew
        self.windows.watermark = self.watermark
        for (start, key), acc in self.open_windows.items():
            self.windows.open.setdefault(start, {})[key] = acc
        for name in hashes.get("seen", {}):
            self._seen.setdefault(float(name.split("|", 1)[0]), set()).add(name)
        self._next_boundary = self._boundary_after(self.final_window())

    def final_window(self) -> float:
        """The newest window start that the watermark has closed (-inf before any event)."""
        w = self.windows
        lag = w.watermark - w.size_s - w.grace_s
        return w.start_of(lag) if lag != -math.inf else -math.inf

    def _boundary_after(self, final: float) -> float:
        """The watermark at which the window after `final` closes."""
        w = self.windows
        return final + 2 * w.size_s + w.grace_s if final != -math.inf else -math.inf

    def fold(self, key: str, t: float, fold: Callable[[Any], Any], source: Source, effects: Effects,
             once: str | None = None) -> bool:
        """Fold into the window of `t`; True when the event was folded in. A late event is routed
        to the late-events topic instead, and a wild clock's reading to the dead letters.

        `once` names the event within its window and key (a sensor and its reading's time): an
        event already counted, such as a sensor's resend, is counted as a repeat, not again."""
        w = self.windows
        start = w.open_start(t)
        if start is None:
            effects.late(source, f"late: window {iso(w.start_of(t))} of {key} closed at watermark {iso(w.watermark)}")
            return False
        if t > w.watermark and self.sensor_clocks and not self.skew.allows(key, t, w.watermark, source,
                                                                                   self.settings.max_skew_s):
            effects.reject(source, Skew.wild(key, t, w.watermark))
            return False
        if once is not None and not self.count_once(key, start, once):
            effects.repeated()
            return False
        w.fold_at(key, start, t, fold)
        self._touched.add((key, start))
        if w.watermark >= self._next_boundary:
            self._pass_boundary(effects)
        return True

    def count_once(self, key: str, start: float, once: str) -> bool:
        """Note that the event named `once` is counted in a window; False when it already was."""
        name = f"{start!r}|{key}|{once}"  # _slot_field(f"{key}|{once}", start), written out: once per event
        seen = self._seen.get(start)
        if seen is None:
            seen = self._seen[start] = set()
        elif name in seen:
            return False
        seen.add(name)
        self._newly_seen.add(name)
        return True

    def _pass_boundary(self, effects: Effects) -> None:
        """Event time has passed the end (plus grace) of a window: close what it completes."""
        closed = self.windows.close_due()
        if closed:
            self.on_close(closed, effects)
            for key, start, _ in closed:
                self.open_windows.pop((start, key), None)  # written before: deleted with the batch
        for start in {start for _, start, _ in closed} & self._seen.keys():
            names = self._seen.pop(start)  # what a closed window counted is not needed again
            self._newly_seen -= names
            effects.batch.hdel("seen", names)
        final = self.final_window()
        self._next_boundary = self._boundary_after(final)
        self.on_final(final, effects)

    def on_final(self, final: float, effects: Effects) -> None:
        """Windows starting at or before `final` are closed for good on this partition."""

    def on_idle(self, wall_now: float, effects: Effects) -> None:
        # Silence is event time passing (streams/clock.py): windows of sensors that stopped close,
        # and stages downstream hear that time goes on. A replay only closes what is open.
        w = self.windows
        if is_live(w.watermark, wall_now, w.size_s + w.grace_s):
            w.advance(wall_now)
        elif w.open:
            w.advance(w.closes_at(max(w.open)))

    def gauges(self) -> metrics.Gauges:
        return metrics.window_lag(self.name, self.windows.watermark)

    @abstractmethod
    def on_close(self, closed: list[tuple[str, float, Any]], effects: Effects) -> None:
        """Emit what the closed windows (key, start, accumulator) say, oldest first."""

    def flush(self, effects: Effects) -> None:
        if self.windows.watermark >= self._next_boundary:  # moved by silence (on_idle), not by an event
            self._pass_boundary(effects)
        for key, start in self._touched:
            acc = self.windows.get(key, start)
            if acc is not None:
                self.open_windows[start, key] = acc
        if self._newly_seen:
            effects.batch.hset("seen", dict.fromkeys(self._newly_seen, "1"))
            self._newly_seen.clear()
        # The watermark is kept whenever it moves: a restarted worker must judge lateness as the
        # first one did, and stages downstream may already have been told of it.
        self.watermark = self.windows.watermark
        self._touched.clear()

