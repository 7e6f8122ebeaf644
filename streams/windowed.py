"""Event-time tumbling windows for a stage, persisted with the partition's state."""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from schemas.contract import Rejected, iso
from streams import metrics
from streams.clock import Skew, is_live
from streams.effects import Effects, RuleFailed, Source, Sources
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
    has counted) is kept beside it, one Redis field per event in a hash of the window's own
    (`seen.<start>`), so that a batch writes what it changed and not everything the window has
    seen, and a window's close drops its hash in one command however much it had seen.
    """

    hashes: ClassVar[tuple[str, ...]] = ("seen",)  # the one hash an earlier version kept them all in
    # The accumulators of the open windows, by (window start, key).
    open_windows = Table(object, key=(float, str), hash="open", held=False)  # held as `windows`
    watermark = Value(float, -math.inf)  # the windows' watermark as of the last batch
    skew = Value(Skew, Skew())
    # Whether event times are the clocks of the sensors that read them, one of which may run wrong
    # (Skew); not for a stage fed by other partitions' records, whose arrival can run apart.
    sensor_clocks: ClassVar[bool] = True

    def __init__(self, partition: int, settings: Settings, reference: Reference):
        super().__init__(partition, settings, reference)
        self.windows: TumblingWindows[str, Any] = TumblingWindows(*self.window_of(settings))
        self._touched: set[tuple[str, float]] = set()
        self._seen: dict[float, set[str]] = {}  # by window start: the events counted once (key|name)
        self._newly_seen: dict[float, list[str]] = {}  # by window start: those not yet written
        self._seen_before: bool = False  # the previous version's hash of them is to be deleted

    @classmethod
    def window_of(cls, settings: Settings) -> tuple[float, float]:
        """The stage's window size and grace period, seconds."""
        return settings.window_s, settings.grace_s

    @classmethod
    def hashes_after(cls, hashes: dict[str, dict[str, bytes]]) -> tuple[str, ...]:
        """The open windows' hashes of the events they counted."""
        return tuple(sorted({f"seen.{float(name.split('|', 1)[0])!r}" for name in hashes.get("open", {})}))

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.skew = Skew.kept_before(hashes.get("meta", {})) or self.skew
        self.windows.watermark = self.watermark
        for (start, key), acc in self.open_windows.items():
            self.windows.open.setdefault(start, {})[key] = acc
        for start in self.windows.open:
            names = hashes.get(f"seen.{start!r}")
            if names:
                self._seen[start] = set(names)
        for name in hashes.get("seen", {}):  # as an earlier version kept them: moved to their windows'
            start, counted = name.split("|", 1)
            self._seen_before = True
            if float(start) in self.windows.open:
                self.count_once(float(start), counted)
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

    @abstractmethod
    def keys(self, event: Any) -> tuple[float, tuple[str, ...], str | None]:
        """When the event happened, the keys whose windows it folds into, and its name within a
        window and key for counting it once (a sensor and its reading's time; None: every event
        counts). The first key's window decides for the rest: an event late, wild or repeated
        there is folded nowhere. Raises Rejected for an event the stage cannot fold."""

    # The window's accumulator (None for a window's first event) with the event added.
    accumulate: ClassVar[Callable[..., Any]]  # (acc, event) -> acc, a staticmethod

    def on_event(self, value: Any, source: Source, effects: Effects) -> None:
        """Fold one event. A stage that reads a topic alongside says what its events do by
        overriding this (on_batch hands them here)."""
        if value.__class__ is not self.contract:
            raise TypeError(f"{self.name} has no rule for {type(value).__name__}: it must override on_event")
        self.on_batch([value], Sources.of([source]), effects)

    def on_batch(self, events: Sequence[Any], sources: Sources, effects: Effects) -> None:
        """Fold each event into the window of its time, in order, as `keys` and `accumulate` say.

        An event for a closed window is routed to the late-events topic, a wild clock's reading
        to the dead letters (Skew), and an event already counted (a sensor's resend) is counted
        as a repeat, not again. The windows an event completes close before the next is folded.
        One loop for the batch, with the windows' state in local names: it runs for every event."""
        w, skew, contract = self.windows, self.skew, self.contract
        size, grace, max_skew = w.size_s, w.grace_s, self.settings.max_skew_s
        wild_clocks = self.sensor_clocks
        floor, stamp, open_, touched = math.floor, sources.stamp, w.open, self._touched
        seen, newly = self._seen, self._newly_seen
        keys_of, accumulate = self.keys, self.accumulate
        watermark, boundary = w.watermark, self._next_boundary
        moved = None  # the broker time of the newest event that moved the watermark, once noted
        for i, event in enumerate(events):
            if event.__class__ is not contract:  # rejected, or another topic's
                w.watermark = watermark
                super().on_batch([event], sources.part(i, i + 1), effects)
                continue
            try:
                t, keys, once = keys_of(event)
                start = floor(t / size) * size
                if start + size + grace <= watermark:  # as TumblingWindows.closes_at adds it up
                    effects.late(sources[i], f"late: window {iso(start)} of {keys[0]} closed at watermark {iso(watermark)}")
                    continue
                if wild_clocks and t > watermark:
                    if t > watermark + max_skew and watermark != -math.inf:
                        if moved is not None:
                            skew.moved_at, moved = moved, None
                        if not skew.allows(keys[0], t, watermark, sources[i], max_skew):
                            effects.reject(sources[i], Skew.wild(keys[0], t, watermark))
                            continue
                    else:
                        moved = stamp(i) or moved
                for key in keys:
                    if once is not None:  # count_once, written out
                        name = f"{key}|{once}"
                        names = seen.get(start)
                        if names is None:
                            names = seen[start] = set()
                            fresh = newly[start] = []
                        elif name in names:
                            effects.repeated()
                            break
                        else:
                            fresh = newly.get(start) or newly.setdefault(start, [])
                        names.add(name)
                        fresh.append(name)
                    accumulators = open_.get(start)
                    if accumulators is None:
                        accumulators = open_[start] = {}
                    accumulators[key] = accumulate(accumulators.get(key), event)
                    touched.add((key, start))
                    if t > watermark:
                        watermark = t
                if watermark >= boundary:
                    w.watermark = watermark
                    effects.trigger_time = stamp(i)
                    self._pass_boundary(effects)
                    boundary = self._next_boundary
            except Rejected as exc:
                effects.reject(sources[i], exc)
            except Exception as exc:
                raise RuleFailed(sources[i], exc) from exc
        w.watermark = watermark
        skew.moved_at = moved or skew.moved_at

    def count_once(self, start: float, counted: str) -> bool:
        """Note that an event (`key|name`) is counted in the window at `start`; False when it was."""
        names = self._seen.setdefault(start, set())
        if counted in names:
            return False
        names.add(counted)
        self._newly_seen.setdefault(start, []).append(counted)
        return True

    def _pass_boundary(self, effects: Effects) -> None:
        """Event time has passed the end (plus grace) of a window: close what it completes."""
        closed = self.windows.close_due()
        if closed:
            self.on_close(closed, effects)
            self.open_windows.discard_all([(start, key) for key, start, _ in closed])
        for start in {start for _, start, _ in closed} & self._seen.keys():
            del self._seen[start]  # what a closed window counted is not needed again
            self._newly_seen.pop(start, None)
            effects.batch.unlink(f"seen.{start!r}")
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
        open_ = self.windows.open
        self.open_windows.update({(start, key): acc for key, start in self._touched
                                  if (acc := open_.get(start, {}).get(key)) is not None})
        if self._seen_before:
            effects.batch.unlink("seen")
            self._seen_before = False
        for start, names in self._newly_seen.items():
            effects.batch.hset(f"seen.{start!r}", dict.fromkeys(names, "1"))
        self._newly_seen.clear()
        # The watermark is kept whenever it moves: a restarted worker must judge lateness as the
        # first one did, and stages downstream may already have been told of it.
        self.watermark = self.windows.watermark
        self._touched.clear()

