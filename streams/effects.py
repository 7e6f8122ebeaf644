"""What applying a batch does, and what becomes of an event that cannot be applied.

`Effects` gathers one partition's batch: its Redis writes and the records to send. An event that
breaks its contract, comes late, or fails the stage's rules leaves as a dead letter that says
why and where it came from, with its personal identifiers withheld (streams/privacy.py).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from faust.types import TopicT

from schemas.contract import Rejected, encode
from schemas.records import DeadLetter
from streams import metrics, topics
from streams.privacy import WITHHELD, without_identifiers
from streams.state import Batch

log = logging.getLogger(__name__)


class Source(NamedTuple):
    """Where an event came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # the broker's record time, epoch seconds


class Sources:
    """Where a batch's events came from: one topic partition's records, a `Source` built only
    for an event that needs one (a dead letter, a late event), and their broker times."""

    __slots__ = ("topic", "partition", "records", "scale", "_stamps")

    def __init__(self, topic: str, partition: int, records: Sequence[Any], ms: bool = True):
        self.topic, self.partition, self.records = topic, partition, records
        self.scale = 1000.0 if ms else 1.0  # a Kafka record's time is in milliseconds
        self._stamps: list[float | None] | None = None

    @classmethod
    def of(cls, sources: Sequence[Source]) -> Sources:
        """Sources given one by one (of one topic partition)."""
        return cls(sources[0].topic, sources[0].partition, sources, ms=False)

    def __getitem__(self, i: int) -> Source:
        r = self.records[i]
        return Source(self.topic, self.partition, r.offset, r.key, r.value, self.stamp(i))

    def __len__(self) -> int:
        return len(self.records)

    def stamp(self, i: int) -> float | None:
        """The broker's time of event `i`, epoch seconds."""
        t = self.records[i].timestamp
        return t / self.scale if t is not None else None

    @property
    def stamps(self) -> list[float | None]:
        """The broker's times of all events."""
        if self._stamps is None:
            scale = self.scale
            self._stamps = [r.timestamp / scale if r.timestamp is not None else None for r in self.records]
        return self._stamps

    def after(self, offset: int) -> Sources:
        """The sources of the records after `offset`."""
        if not self.records or self.records[0].offset > offset:
            return self
        return self.pick([i for i, r in enumerate(self.records) if r.offset > offset])

    def pick(self, indices: Sequence[int]) -> Sources:
        """The sources of the events at `indices`."""
        return self._picked([self.records[i] for i in indices])

    def part(self, start: int, stop: int) -> Sources:
        """The sources of events `start` to `stop` (exclusive)."""
        return self._picked(self.records[start:stop])

    def _picked(self, records: Sequence[Any]) -> Sources:
        picked = Sources(self.topic, self.partition, records)
        picked.scale = self.scale
        return picked

    def offset(self, i: int) -> int:
        return self.records[i].offset


class RuleFailed(Exception):
    """A stage's rules raised on one event: the same event fails the same way every time it is
    applied, so it is dead-lettered, not retried."""

    def __init__(self, source: Source, exc: Exception):
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.source = source


@dataclass
class Effects:
    """What one partition's batch does: Redis writes and records to send."""

    stage: str
    batch: Batch
    sends: list[tuple[TopicT, bytes | None, bytes, int | None]] = field(default_factory=list)
    trigger_time: float | None = None  # broker time of the event being applied
    alerts_set_off: list[tuple[str, float]] = field(default_factory=list)  # (category, trigger time)
    approval: bool = False  # alerts go by way of the operators' approval (agents/approval.py)

    def alert_set_off(self, category: str) -> None:
        """Note that the event being applied set an alert off, to time the alert's latency."""
        if self.trigger_time:
            self.alerts_set_off.append((category, self.trigger_time))

    def send(self, topic: TopicT, key: str | None, record: Any, partition: int | None = None) -> None:
        self.sends.append((topic, key.encode() if key is not None else None, encode(record), partition))

    def send_raw(self, topic: TopicT, key: str | None, value: bytes) -> None:
        self.sends.append((topic, key.encode() if key is not None else None, value, None))

    def divert(self, topic: TopicT, source: Source, reason: str) -> None:
        """Route an event that cannot be applied (dead letter, late event) with the reason."""
        self.sends.append((topic, source.topic.encode(), encode(dead_letter(source, reason)), None))

    def reject(self, source: Source, exc: Rejected) -> None:
        """Dead-letter an event that breaks its contract, counted and logged with where it came from."""
        log.warning(
            "dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, exc.reason,
            extra={"topic": source.topic, "partition": source.partition, "offset": source.offset},
        )
        metrics.EVENTS_REJECTED.labels(self.stage, exc.kind).inc()
        metrics.DEAD_LETTERS.labels(self.stage).inc()
        self.divert(topics.dead_letters, source, exc.reason)

    def repeated(self) -> None:
        """The event is one its sensor sent before: it counts once, and is counted as a repeat."""
        metrics.EVENTS_REPEATED.labels(self.stage).inc()

    def late(self, source: Source, reason: str) -> None:
        metrics.EVENTS_LATE.labels(self.stage).inc()
        self.divert(topics.late_events, source, reason)


# A dead letter keeps the start of what it could not use, its length and digest, and the start of
# the reason: an event of a megabyte must not make a dead letter that Kafka refuses in turn.
EXCERPT_CHARACTERS = 2_000
RECORD_OVERHEAD = 1_024  # bytes of a record batch around one record, well above what it takes
REASON_CHARACTERS = 500


def dead_letter(source: Source, reason: str) -> DeadLetter:
    spec = topics.spec_of(source.topic)
    raw = without_identifiers(source.value or b"", spec.personal if spec else ())
    key = source.key.decode("utf-8", "replace")[:EXCERPT_CHARACTERS] if source.key is not None else None
    encoding: Literal["utf-8", "base64"] = "utf-8"
    try:
        text = raw.decode("utf-8")[:EXCERPT_CHARACTERS]
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw[: EXCERPT_CHARACTERS * 3 // 4]).decode(), "base64"
    return DeadLetter(
        source_topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        reason=reason if len(reason) <= REASON_CHARACTERS else reason[:REASON_CHARACTERS] + "...",
        raw=text,
        raw_encoding=encoding,
        raw_bytes=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        # When Kafka took the event, not when it was read: a resent dead letter is the same record.
        received_at=source.timestamp if source.timestamp is not None else time.time(),
        key=WITHHELD if key is not None and spec and spec.personal_key else key,
    )
