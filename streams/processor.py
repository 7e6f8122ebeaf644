"""Runs a stage's per-partition logic over batches of Kafka events, exactly once on Redis.

For each fetched batch of one topic partition (streams/batching.py): events at or below the
partition's applied offset are skipped (a redelivery); each is decoded against its contract, and
a bad one becomes a dead-letter record; the stage folds the rest into its in-memory state, one
event at a time, deciding as it goes. The batch's output records
are sent and acknowledged by Kafka first, then its Redis writes are committed together with the
offset. A crash in between resends the same deterministic records and applies the state once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar

from faust.types import TopicT

from schemas.contract import Rejected, decoder, encode, iso
from streams import metrics, topics
from streams.app import app
from streams.batching import RecordBatch
from streams.effects import RECORD_OVERHEAD, Effects, RuleFailed, Source, Sources, dead_letter
from streams.privacy import Keyring
from streams.reference import Reference
from streams.settings import Settings
from streams.stage import Stage
from streams.state import Batch, Snapshot, StateStore, partition_key
from streams.topics import topic_name

log = logging.getLogger(__name__)

YIELD_EVERY = 256  # events applied between two chances for other stages to run
UNANSWERED_LOG_EVERY_S = 60.0  # a broker that does not answer is logged once a minute, not once a second


S = TypeVar("S", bound=Stage)


@dataclass
class Owned(Generic[S]):
    """A partition this worker holds: its stage, and the offset and commit count it is at."""

    stage: S
    offsets: dict[str, int]  # by offset key name
    commits: int


class Misplaced(Exception):
    """A valid event read under a key other than its own id: it belongs on its id's partition."""

    def __init__(self, key: str, event: Any):
        super().__init__(key)
        self.key = key
        self.event = event


@dataclass
class InFlight:
    """A batch applied in memory whose records and Redis commit are on their way."""

    partition: int
    topic: str
    sources: Sources
    task: asyncio.Future[list[int]]  # the partitions whose state had moved on elsewhere

    async def landed(self) -> bool:
        try:
            return not await self.task
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("records or commit of a batch of %d events failed; redoing it from Redis", len(self.sources))
            return False


class Input(Protocol):
    """The source topics as the consumer reads them, for a state that must read them again."""

    async def earliest(self, topic: str, partition: int) -> int:
        """The earliest offset Kafka still keeps."""

    async def reread(self, topic: str, partition: int, offset: int) -> None:
        """Read the partition again from `offset`."""

    async def ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The offset after the last record of each (topic, partition), as Kafka says now; raises
        when Kafka cannot be asked."""


class Processor(Generic[S]):
    """Drives one stage over its source topic's partitions."""

    def __init__(self, stage: type[S], state: StateStore, reference: Reference, settings: Settings,
                 source: Input | None = None):
        self.stage = stage
        self.topic = topic = topic_name(stage.source, settings)
        # Each source topic's applied offset has a key of its own: `offset` for the stream,
        # `offset.<role>` for a table joined in.
        self.offset_names = {topic: "offset", **{topic_name(role, settings): f"offset.{role}" for role in stage.alongside}}
        self.contracts = {topic: stage.contract, **{topic_name(r, settings): c for r, c in stage.alongside.items()}}
        self.personal = {t: topics.personal_fields(t, settings) for t in self.contracts}
        # The field each topic is keyed by, where the key is one of the event's own fields.
        self.key_fields = {t: spec.key for t in self.contracts if (spec := topics.spec_of(t, settings))
                           and spec.key in {f.name for f in dataclasses.fields(self.contracts[t])}}
        self._keyring: Keyring | None = None
        self.name = stage.name
        self.state = state
        self.reference = reference
        self.settings = settings
        self.approval = bool(settings.approval.severities)  # public alerts wait for operators (agents/approval.py)
        self.stages: dict[int, Owned[S]] = {}
        self._lock = asyncio.Lock()
        self._in_flight: InFlight | None = None
        self._failing: dict[tuple[str, int, int], str] = {}  # events the rules failed on: dead-lettered
        self._unanswered_logged = -math.inf
        self.read_to: dict[tuple[str, int], int] = {}  # where the group had read each partition to when assigned
        self.input = source  # None in process (streams/tools/harness.py), where nothing is ever lost
        self.assigned: set[int] = set()  # the partitions of the source assigned here

    def base(self, partition: int) -> str:
        return partition_key(self.settings.key_prefix, self.name, partition)

    def offset_key(self, topic: str, partition: int) -> str:
        """The Redis key of the offset this stage has applied on a topic partition it reads."""
        return f"{self.base(partition)}:{self.offset_names[topic]}"

    async def _loaded(self, partition: int) -> Owned[S]:
        if partition not in self.stages:
            await self._land()  # a state read from Redis must hold the batch in flight
        if partition not in self.stages:
            # The city map first: a partition loaded at its assignment may close windows on the
            # timer before any event of its own has asked for the map.
            await self.reference.start()
            stage = self.stage(partition, self.settings, self.reference)
            snapshot = await self._snapshot(partition)
            stage.load(snapshot.hashes)
            self.stages[partition] = Owned(stage, snapshot.offsets, snapshot.commits)
        return self.stages[partition]

    async def _snapshot(self, partition: int) -> Snapshot:
        """The partition's state in Redis, with the hashes its first read names (`hashes_after`),
        read again whole if a commit came between the two."""
        base, offsets = self.base(partition), list(self.offset_names.values())
        while True:
            snapshot = await self.state.load(base, offsets, self.stage.restored_hashes())
            more = self.stage.hashes_after(snapshot.hashes)
            if not more:
                return snapshot
            after = await self.state.load(base, [], more)
            if after.commits == snapshot.commits:
                return Snapshot(snapshot.offsets, snapshot.commits, {**snapshot.hashes, **after.hashes})

    async def load(self, partitions: Iterable[int]) -> None:
        """Load the state of partitions just assigned here; one that fails loads at its next batch."""
        async with self._lock:
            for partition in partitions:
                self.assigned.add(partition)
                try:
                    await self._loaded(partition)
                except Exception:
                    log.exception("%s: loading partition %d failed; it loads with its next batch", self.name, partition)

    @contextlib.asynccontextmanager
    async def between_batches(self) -> AsyncIterator[dict[int, S]]:
        """The stages of the partitions held here, while no batch is being applied to them: for
        work beside the stream (a stage's deliveries due) that reads or changes their state."""
        async with self._lock:
            yield {p: owned.stage for p, owned in self.stages.items()}

    def lag(self, highwater: Callable[[str, int], int | None]) -> metrics.Gauges:
        """Records on the source topics of the partitions held here, not yet applied."""
        behind = sum(self._unread(p, owned, highwater) for p, owned in list(self.stages.items()))
        return metrics.gauge("citybrain_consumer_lag_records", behind, self.name)

    def _unread(self, partition: int, owned: Owned, highwater: Callable[[str, int], int | None]) -> int:
        """Records on the partition's source topics that this worker has not applied yet."""
        unread = 0
        for topic, name in self.offset_names.items():
            end = highwater(topic, partition)
            if end is not None:
                unread += max(0, end - owned.offsets[name] - 1)
        return unread

    def forget(self, revoked: Sequence[Any]) -> None:
        """Drop in-memory state of the topic partitions this worker no longer owns."""
        for tp in revoked:
            if tp.topic in self.offset_names:
                self.stages.pop(tp.partition, None)
                self.assigned.discard(tp.partition)

    async def process(self, batch: RecordBatch) -> None:
        """Apply one fetched batch of a topic partition.

        Its records and Redis commit go out while the next batch is applied, so the stage's
        state in memory runs at most one batch ahead of Redis. A commit that does not land
        (Redis or Kafka unreachable, the partition taken by another worker) is redone from the
        batches still in hand, retried until it succeeds: the stage stalls rather than skips.
        """
        topic, partition = batch.tp
        sources = Sources(topic, partition, batch)
        async with self._lock:
            try:
                await self.reference.start()
                effects = await self._apply(partition, topic, sources)
                applied = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note(exc)
                log.exception("%s: batch of %d events failed; redoing it from Redis", self.name, len(sources))
                effects, applied = None, False
            if await self._land():
                applied = False  # built on a batch whose commit did not land: both are redone
            if not applied:
                self.stages.clear()  # in-memory state may be half-applied: reload from Redis
                await self._settle(partition, topic, sources)
            elif effects is not None:
                self._in_flight = InFlight(partition, topic, sources,
                                           asyncio.ensure_future(self._emit_and_commit([(partition, effects)])))

    async def land(self) -> None:
        """Wait until the batch in flight has landed in Kafka and Redis, redoing it if it did not."""
        async with self._lock:
            await self._land()

    async def _land(self) -> bool:
        """True when the batch in flight did not land and was redone on the state in Redis."""
        before, self._in_flight = self._in_flight, None
        if before is None or await before.landed():
            return False
        self.stages.clear()
        await self._settle(before.partition, before.topic, before.sources)
        return True

    async def _settle(self, partition: int, topic: str, sources: Sources) -> None:
        """Apply a batch on the state in Redis and wait for its records and commit to land."""
        delay = 0.5
        while True:
            try:
                await self.reference.start()
                for _attempt in range(5):
                    effects = await self._apply(partition, topic, sources)
                    if effects is None or not await self._emit_and_commit([(partition, effects)]):
                        return
                    self.stages.pop(partition, None)
                raise RuntimeError(f"{self.name}: partition {partition} kept moving under us")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stages.clear()
                if self._note(exc):
                    log.exception("%s: batch of %d events failed; redoing it at once", self.name, len(sources))
                    continue  # the event that failed goes to the dead letters this time
                log.exception("%s: batch of %d events failed; retrying in %.1f s", self.name, len(sources), delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    def _note(self, exc: Exception) -> bool:
        """Note an event the stage's rules failed on, to be dead-lettered when its batch is redone;
        False for a failure that may heal (Redis or Kafka unreachable), which is retried."""
        if not isinstance(exc, RuleFailed):
            return False
        s = exc.source
        self._failing[(s.topic, s.partition, s.offset)] = f"the {self.name} stage failed on this event: {exc}"
        return True

    async def tick(self) -> None:
        """Close the windows of partitions that have gone silent.

        Silent means nothing new to read, as Kafka says now, not merely nothing read: a
        partition with records waiting (a backlog, a rebalance) is behind, and one whose broker
        cannot be asked (cut off, restarting) is not known to be quiet; both wait.
        """
        if self.input is not None:
            await self._reload_dropped()
        now = time.monotonic()
        quiet = [p for p, owned in list(self.stages.items())
                 if now - owned.stage.last_event_wall >= self.settings.idle_close_s]
        if not quiet or self.input is None:
            return
        try:
            ends = await self.input.ends([(topic, p) for p in quiet for topic in self.offset_names])
        except Exception as exc:
            if now - self._unanswered_logged >= UNANSWERED_LOG_EVERY_S:
                self._unanswered_logged = now
                log.warning("%s: Kafka does not say what is left to read (%s); the windows of %d quiet "
                            "partitions stay open until it does", self.name, str(exc) or type(exc).__name__, len(quiet))
            return
        async with self._lock:
            try:
                await self._land()
                work = []
                for p in quiet:
                    owned = self.stages.get(p)
                    if owned is None or now - owned.stage.last_event_wall < self.settings.idle_close_s:
                        continue  # taken away, or events came while Kafka was asked
                    if self._unread(p, owned, lambda topic, partition: ends.get((topic, partition))):
                        continue
                    effects = Effects(self.name, Batch(self.base(p), owned.commits, dict(owned.offsets)), approval=self.approval)
                    owned.stage.on_idle(time.time(), effects)
                    owned.stage.end_batch(effects)
                    if effects.batch.commands or effects.sends:
                        owned.commits += 1
                        work.append((p, effects))
                for p in await self._emit_and_commit(work):
                    self.stages.pop(p, None)
            except Exception:
                # The timer comes round again; the state is reloaded from Redis meanwhile.
                log.exception("%s: closing silent windows failed", self.name)
                self.stages.clear()

    async def _reload_dropped(self) -> None:
        """Load again the assigned partitions whose state was dropped after a failure (Redis gone,
        a commit lost): one that stays quiet still closes its windows, from what Redis holds."""
        for partition in sorted(self.assigned - self.stages.keys()):
            try:
                async with self._lock:
                    await self._loaded(partition)
            except Exception:  # noqa: BLE001  Redis not back yet: the failure was logged, the next round tries again
                return

    async def _apply(self, partition: int, topic: str, sources: Sources) -> Effects | None:
        """Apply one partition's events of one topic in memory; what they write and send, or
        None when every one was applied before.

        The partition's offsets and commit count move on at once, as the commit will leave
        them: the next batch is built on this one. Whoever sees this batch fail clears the state.
        """
        owned = await self._loaded(partition)
        stage = owned.stage
        offset_name = self.offset_names[topic]
        applied = owned.offsets[offset_name]
        first = sources.offset(0)
        if first > applied + 1 and await self._reread(topic, partition, applied, first):
            return None
        fresh = sources.after(applied)
        if len(fresh) < len(sources):
            metrics.EVENTS_REDELIVERED.labels(self.name).inc(len(sources) - len(fresh))
        if not len(fresh):
            return None
        decoded, odd = self._decoded(topic, fresh)
        if not stage.knows_all([v.event if isinstance(v, Misplaced) else v for v in decoded if not isinstance(v, Rejected)]
                               if odd else decoded):
            await self.reference.catch_up()
        effects = Effects(self.name, Batch(self.base(partition), owned.commits,
                                           {**owned.offsets, offset_name: fresh.offset(len(fresh) - 1)}),
                          approval=self.approval)
        events, fresh = self._screened(decoded, odd, fresh, stage, effects)
        for start in range(0, len(events), YIELD_EVERY):
            if start:
                # A long batch lets other stages' batches through now and then: a depth reading
                # that closes a road must not wait behind thousands of traffic readings.
                await asyncio.sleep(0)
            stage.on_batch(events[start:start + YIELD_EVERY], fresh.part(start, start + YIELD_EVERY), effects)
        stage.end_batch(effects)
        stage.last_event_wall = time.monotonic()
        owned.offsets, owned.commits = effects.batch.offsets, owned.commits + 1
        metrics.BATCH_SIZE.labels(self.name).observe(len(decoded))
        metrics.EVENTS_PROCESSED.labels(self.name).inc(len(decoded))
        return effects

    def _screened(self, decoded: list[Any], odd: bool, sources: Sources, stage: Stage,
                  effects: Effects) -> tuple[list[Any], Sources]:
        """The events to apply and their sources: one read under another's key is sent on to its
        own (and left out here), one the stage's rules failed on before is dead-lettered."""
        if not self._failing and not (odd and any(isinstance(v, Misplaced) for v in decoded)):
            return decoded, sources
        events, kept = [], []
        for i, value in enumerate(decoded):
            if isinstance(value, Misplaced):
                if stage.knows(value.event):
                    self._rekey(sources[i], value.key, effects)
                    continue
                value = value.event  # an id the city map lacks: dead-lettered by the stage, as any is
            reason = self._failing.get((sources.topic, sources.partition, sources.offset(i)))
            events.append(Rejected(reason, "stage_error") if reason is not None else value)
            kept.append(i)
        return events, sources.pick(kept)

    async def _reread(self, topic: str, partition: int, applied: int, first: int) -> bool:
        """The state has applied the partition up to `applied` but the batch starts at `first`:
        Redis lost the writes between (a restart without them, a restore of an older copy).
        Reads them again and returns True, so that this batch waits; False where Kafka keeps
        nothing before `first` and the group never read there (a state that starts where the
        topic now starts)."""
        if self.input is None:
            return False
        earliest = await self.input.earliest(topic, partition)
        read_past = self.read_to.get((topic, partition), 0) > applied + 1 and self.name not in self.settings.fresh_stages
        if applied + 1 < earliest and (first > earliest or read_past):
            metrics.INPUT_GONE.labels(self.name).inc()
            raise RuntimeError(
                f"{self.name}: the state of {topic}[{partition}] has applied up to offset {applied}, but Kafka "
                f"keeps only from offset {earliest}: the input it needs is gone; restore Redis from a copy "
                f"that had applied offset {earliest - 1} or later (or, for a stage new to this city, list "
                f"it in CITYBRAIN_FRESH_STAGES)"
            )
        if first <= earliest:
            return False
        log.error(
            "%s: the state of %s[%d] has applied up to offset %d but reading is at %d: Redis lost the writes "
            "between; reading them again from Kafka", self.name, topic, partition, applied, first,
        )
        metrics.STATE_REREADS.labels(self.name).inc()
        await self.input.reread(topic, partition, applied + 1)
        return True

    def _rekey(self, source: Source, key: str, effects: Effects) -> None:
        """Send an event read under the wrong key back to its topic under its own, so that it is
        applied on its id's partition with the state of that id, never here beside another's."""
        spec = topics.spec_of(source.topic, self.settings)
        personal = spec is not None and spec.personal_key
        log.warning(
            "%s[%d]@%d was keyed %s, not by its own id%s: sent again under it", source.topic, source.partition,
            source.offset, "null" if source.key is None else "otherwise", "" if personal else f" {key!r}",
            extra={"topic": source.topic, "partition": source.partition, "offset": source.offset},
        )
        metrics.EVENTS_REKEYED.labels(self.name).inc()
        effects.send_raw(app.topic(source.topic), key, source.value or b"")

    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = Keyring(self.settings.privacy_keys)  # refuses to go on without a key
        return self._keyring

    def _decoded(self, topic: str, sources: Sources) -> tuple[list[Any], bool]:
        """Each record's event, or in its place the `Rejected` that says why it has none, or the
        `Misplaced` that says it was read under another key; and whether there is any such."""
        contract, field, personal = self.contracts[topic], self.key_fields.get(topic), self.personal[topic]
        max_ahead, scale, decode_one = self.settings.max_ahead_s, sources.scale, decoder(contract)
        out: list[Any] = []
        odd = False
        for r in sources.records:
            try:
                value: Any = decode_one(r.value)
                own = getattr(value, field) if field is not None else None  # before identifiers become tokens
                if personal:
                    # From here on the stage sees tokens only: a raw identifier never reaches its
                    # state, its records, its logs or its alerts.
                    value = self.keyring().pseudonymise(value, personal)
                t = getattr(value, "event_time", None)
                # One reading from a clock far in the future would make every later one late.
                if t is not None and r.timestamp and t > r.timestamp / scale + max_ahead:
                    raise Rejected(f"event_time {iso(t)} is more than {max_ahead:.0f} s ahead of the "
                                   f"broker's record time {iso(r.timestamp / scale)}", "from_the_future")
                if own is not None and r.key != own.encode():
                    value, odd = Misplaced(own, value), True
                out.append(value)
            except Rejected as exc:
                out.append(exc)
                odd = True
        return out, odd

    async def send(self, sends: list[tuple[TopicT, bytes | None, bytes, int | None]]) -> None:
        """Send records and wait until Kafka has taken every one.

        Straight to the producer: faust's per-message bookkeeping (a future, callbacks and
        sensors per record) would cost more than the stage's own work on a re-keying stage.
        """
        if not sends:
            return
        producer = sends[0][0].app.producer
        futures = [await producer.send(topic.get_topic_name(), key, value, partition, None, None)
                   for topic, key, value, partition in sends]
        await asyncio.gather(*futures)

    @cached_property
    def _most_record_bytes(self) -> int:
        return topics.dead_letters.app.conf.producer_max_request_size - RECORD_OVERHEAD

    def _sendable(self, send: tuple[TopicT, bytes | None, bytes, int | None]) -> tuple[TopicT, bytes | None, bytes, int | None]:
        """The record, or the dead letter that goes instead of one too large for Kafka, which would
        refuse it every time it is tried and stall the stage for good."""
        topic, key, value, _ = send
        most = self._most_record_bytes
        if len(value) + len(key or b"") <= most:
            return send
        name = topic.get_topic_name()
        reason = f"a record of {len(value):,} bytes for {name} is more than Kafka takes ({most:,}); not sent"
        log.error("%s: %s", self.name, reason)
        metrics.DEAD_LETTERS.labels(self.name).inc()
        letter = dead_letter(Source(name, -1, -1, key, value, time.time()), reason)
        return topics.dead_letters, name.encode(), encode(letter), None

    async def _emit_and_commit(self, work: list[tuple[int, Effects]]) -> list[int]:
        """Send every record and wait for Kafka to take them, then commit Redis; returns the
        partitions whose state had moved on elsewhere, which the caller reloads."""
        await self.send([self._sendable(send) for _, effects in work for send in effects.sends])
        now = time.time()
        for _, effects in work:
            for category, t in effects.alerts_set_off:
                metrics.ALERT_LATENCY.labels(category).observe(max(0.0, now - t))
        started = time.perf_counter()
        applied = await self.state.commit([e.batch for _, e in work])
        metrics.REDIS_COMMIT_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        conflicts = [p for (p, _), commits in zip(work, applied) if commits is None]
        if conflicts:
            metrics.STATE_CONFLICTS.labels(self.name).inc(len(conflicts))
        return conflicts
