"""Run a stage in process, without Kafka or Redis: events in, records out, state left behind.

    out = run_stage(TrafficStage, [("traffic_readings", "S1", reading), ...], city=city, batch=500)
    out.sent("alerts")    # [(key, record as JSON), ...] as the stage sent them, partition by partition
    out.state             # {redis key: value}, as the commit script would leave it

The stage runs through the real `Processor` (decoding, dead letters, privacy, fencing, windows);
only the two ends are replaced: records are kept instead of sent, and each commit's commands are
applied to a dict the way `streams/state.py`'s script applies them to Redis. Events are split
into batches of `batch` per topic partition, as the consumer would fetch them; where the topic
changes in the list, every batch pending is applied first, so topics arrive in the order given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from faust.types import TP

from schemas.contract import encode
from schemas.reference import CityMap
from streams.app import partition_for
from streams.batching import RecordBatch
from streams.processor import Processor
from streams.reference import Reference
from streams.settings import Settings
from streams.settings import settings as default_settings
from streams.stage import Stage
from streams.state import Batch, Snapshot
from streams.topics import REFERENCE, partitions_of, topic_name


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that the processor reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None  # ms


class MemoryState:
    """The state store's contract over a dict: fenced commits of a partition's commands."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def load(self, base: str, offsets: Sequence[str], hashes: Sequence[str]) -> Snapshot:
        return Snapshot(
            {name: int(self.data.get(f"{base}:{name}", -1)) for name in offsets},
            int(self.data.get(f"{base}:commits", 0)),
            {name: {k: _bytes(v) for k, v in self.data.get(f"{base}:{name}", {}).items()} for name in hashes},
        )

    async def commit(self, batches: Sequence[Batch]) -> list[int | None]:
        applied: list[int | None] = []
        for b in batches:
            if int(self.data.get(f"{b.base}:commits", 0)) != b.commits or any(
                offset < int(self.data.get(f"{b.base}:{name}", -1)) for name, offset in b.offsets.items()
            ):
                applied.append(None)
                continue
            for command in b.commands:
                op, key, *args = command
                self._apply(str(op), str(key), *args)
            for name, offset in b.offsets.items():
                self.data[f"{b.base}:{name}"] = str(offset)
            self.data[f"{b.base}:commits"] = str(b.commits + 1)
            applied.append(b.commits + 1)
        return applied

    def _apply(self, op: str, key: str, *args: Any) -> None:
        if op == "HSET":
            self.data.setdefault(key, {}).update({_text(args[i]): _text(args[i + 1]) for i in range(0, len(args), 2)})
        elif op == "HDEL":
            fields = self.data.get(key, {})
            for f in args:
                fields.pop(_text(f), None)
        elif op == "SET":
            self.data[key] = _text(args[0])
        elif op == "ZADD":
            self.data.setdefault(key, {}).update({_text(args[i + 1]): float(args[i]) for i in range(0, len(args), 2)})
        elif op == "ZREM":
            members = self.data.get(key, {})
            for m in args:
                members.pop(_text(m), None)
        elif op in ("DEL", "UNLINK"):
            self.data.pop(key, None)
        else:
            raise ValueError(f"the harness does not know {op}")
        if key in self.data and self.data[key] == {}:
            del self.data[key]  # as Redis drops an emptied hash


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _bytes(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else v


class FixedReference(Reference):
    """A city map given up front instead of read from the reference topics."""

    def __init__(self, s: Settings, city: CityMap):
        super().__init__(s)
        for role in REFERENCE:
            for record in getattr(city, role).values():
                self._apply(topic_name(role, s), None, encode(record))

    async def start(self) -> None:
        """Nothing to read."""

    async def catch_up(self, now: bool = False) -> None:
        """Nothing to read."""


Sent = tuple[str, bytes | None, bytes, int | None]  # (topic name, key, value, partition or None)


class HarnessProcessor(Processor):
    """A processor that keeps what it would send, by the partition whose events sent it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sends: dict[int, list[Sent]] = defaultdict(list)
        self._from = 0

    async def _emit_and_commit(self, work: list) -> list[int]:
        if work:
            self._from = work[0][0]  # one partition per batch; the timer's work in a test is one too
        return await super()._emit_and_commit(work)

    async def send(self, sends: list) -> None:
        self.sends[self._from].extend((topic.get_topic_name(), key, value, partition)
                                      for topic, key, value, partition in sends)


@dataclasses.dataclass
class Output:
    """What a stage sent, by the source partition whose events sent it (Kafka orders records
    within a partition, not across them), and the state it left."""

    sends: dict[int, list[Sent]]
    state: dict[str, Any]
    settings: Settings

    def sent(self, role: str) -> list[tuple[str | None, Any]]:
        """(key, JSON record) sent to a topic, partition by partition."""
        name = topic_name(role, self.settings)
        return [(k.decode() if k is not None else None, orjson.loads(v))
                for p in sorted(self.sends) for t, k, v, _ in self.sends[p] if t == name]


Event = tuple[str, str | None, Any]  # (topic role, key, record or raw bytes); partition by key hash
PlacedEvent = tuple[str, int, str | None, Any, float]  # (topic role, partition, key, value, broker time s)


def place(events: Iterable[Event], s: Settings, broker_time: float) -> list[PlacedEvent]:
    """Events with the partition the default producer would choose (murmur2 of the key)."""
    out = []
    for role, key, value in events:
        n = partitions_of(role, s)
        p = partition_for(key.encode(), list(range(n)), []) if key is not None else 0
        out.append((role, p, key, value, broker_time))
    return out


def run_stage(stage: type[Stage], events: Sequence[Event] | Sequence[PlacedEvent], *, city: CityMap,
              batch: int = 10_000, settings: Settings | None = None, broker_time: float | None = None,
              state: MemoryState | None = None) -> Output:
    """Feed events through one stage in batches of at most `batch` per topic partition."""
    s = settings or default_settings()
    placed = events if not events or len(events[0]) == 5 else place(
        events, s, broker_time if broker_time is not None else time.time())  # type: ignore[arg-type]
    store = state or MemoryState()
    processor = HarnessProcessor(stage, store, FixedReference(s, city), s)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    pending: dict[tuple[str, int], list[Record]] = defaultdict(list)

    async def flush(tp: tuple[str, int]) -> None:
        records = pending.pop(tp)
        await processor.process(RecordBatch(TP(*tp), records))

    async def go() -> None:
        topic = None
        for role, partition, key, value, at in placed:  # type: ignore[misc]
            if role != topic:  # topics arrive in the order given: batches never reach across them
                for tp in list(pending):
                    await flush(tp)
                topic = role
            tp = (topic_name(role, s), partition)
            raw = value if isinstance(value, bytes) or value is None else encode(value)
            pending[tp].append(Record(tp[0], partition, offsets[tp], key.encode() if key is not None else None,
                                      raw, int(at * 1000)))
            offsets[tp] += 1
            if len(pending[tp]) >= batch:
                await flush(tp)
        for tp in list(pending):
            await flush(tp)
        await processor.land()

    asyncio.run(go())
    return Output(processor.sends, store.data, s)
