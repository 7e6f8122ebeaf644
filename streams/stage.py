"""The stage: one partition's state and rules, as every domain declares it.

A stage names the topic it reads and its contract, declares its keyed state as tables
(streams/table.py), and folds one event at a time (`on_event`), deciding as it goes. The
processor (streams/processor.py) loads, applies and commits it; a stage never touches Redis or
Kafka itself.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from schemas.contract import Rejected
from streams import metrics
from streams.effects import Effects, RuleFailed, Source, Sources
from streams.reference import Reference
from streams.settings import Settings
from streams.table import Ranking, Table, Value, declared

log = logging.getLogger(__name__)


class Stage(ABC):
    """One stage's state and rules for one partition, restored from and saved to Redis."""

    # The stage's one name: its agent's, its metrics' `stage` label and its keys'
    # (`<prefix>:{<name>.<partition>}:...`).
    name: ClassVar[str]
    source: ClassVar[str]  # the role (streams/topics.py) of the topic it reads
    contract: ClassVar[type]  # what its source topic carries
    # Co-partitioned topics read alongside the source (topic role -> contract): keyed like it, so
    # partition n of each lands on the worker that holds partition n of the stage.
    alongside: ClassVar[dict[str, type]] = {}
    # Its state is declared as `Table`, `Value` and `Ranking` attributes (streams/table.py); these
    # are the other Redis hashes it restores itself.
    hashes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, partition: int, settings: Settings, reference: Reference):
        self.partition = partition
        self.settings = settings
        self.reference = reference
        self.last_event_wall = time.monotonic()
        self.values_written: dict[str, bytes] = {}  # each Value as Redis holds it

    @classmethod
    def restored_hashes(cls) -> tuple[str, ...]:
        """The Redis hashes read when a partition of the stage is loaded."""
        meta = (Value.HASH,) if any(v.restored for v in declared(cls, Value).values()) else ()
        return (*cls.hashes, *meta, *(t.hash for t in declared(cls, Table).values() if t.restored))

    @classmethod
    def hashes_after(cls, hashes: dict[str, dict[str, bytes]]) -> tuple[str, ...]:
        """Further hashes to read when a partition is loaded, named by what the first read found."""
        return ()

    def load(self, hashes: dict[str, dict[str, bytes]]) -> None:
        """Restore the partition's tables and values from its Redis hashes, then the rest (`restore`)."""
        for name, table in declared(type(self), Table).items():
            if table.restored:
                getattr(self, name).restore(hashes.get(table.hash, {}))
        meta = hashes.get(Value.HASH, {})
        for name, value in declared(type(self), Value).items():
            raw = meta.get(name) if value.restored else None
            if raw is not None:
                setattr(self, name, value.read(raw))
            self.values_written[name] = value.write(getattr(self, name))
        self.restore(hashes)

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        """Rebuild in memory what the tables do not hold: derived state, hand-kept hashes."""

    def end_batch(self, effects: Effects) -> None:
        """The batch's end: the stage's `flush`, then the writes of what its state changed."""
        self.flush(effects)
        for name in (*declared(type(self), Table), *declared(type(self), Ranking)):
            getattr(self, name).save(effects.batch)
        changed = {}
        for name, value in declared(type(self), Value).items():
            raw = value.write(getattr(self, name))
            if raw != self.values_written.get(name):
                self.values_written[name] = raw
                changed[name] = raw.decode()
        if changed:
            effects.batch.hset(Value.HASH, changed)

    def knows(self, value: Any) -> bool:
        """Whether the reference data this event needs is loaded."""
        return True

    def knows_all(self, values: Iterable[Any]) -> bool:
        """Whether the reference data these events need is loaded."""
        return all(map(self.knows, values))

    @abstractmethod
    def on_event(self, value: Any, source: Source, effects: Effects) -> None:
        """Fold one valid event into the state; raise Rejected to dead-letter it untouched."""

    def on_batch(self, events: Sequence[Any], sources: Sources, effects: Effects) -> None:
        """Apply a batch's events in order; one that broke its contract is a `Rejected` in its
        place. A stage whose rules fold many events alike may loop over them itself
        (streams/windowed.py), deciding per event all the same."""
        stamps = sources.stamps
        for i, value in enumerate(events):
            effects.trigger_time = stamps[i]
            self.apply(value, sources[i], effects)

    def apply(self, value: Any, source: Source, effects: Effects) -> None:
        """Apply one event, or dead-letter it with the reason it cannot be applied."""
        try:
            if isinstance(value, Rejected):
                raise value
            self.on_event(value, source, effects)
        except Rejected as exc:
            effects.reject(source, exc)
        except Exception as exc:
            raise RuleFailed(source, exc) from exc

    def flush(self, effects: Effects) -> None:
        """End of a batch: emit what is complete and stage the Redis writes of hand-kept state."""

    def on_idle(self, wall_now: float, effects: Effects) -> None:
        """The partition has been silent for `idle_close_s`; close what silence completes."""

    def gauges(self) -> metrics.Gauges:
        """The city's gauges as this partition sees them (streams/metrics.py), read at scrape time."""
        return {}
