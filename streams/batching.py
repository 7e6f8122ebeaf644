"""The batch path beneath faust: one event per fetched partition batch.

faust hands every record to its streams one at a time, at about 100 us of CPU each here, while
the stages fold whole batches. The `citybrain://` transport keeps faust's consumer group,
rebalance callbacks, flow control, Fetcher loop and commits, and changes only what a fetch
becomes: the records fetched for one topic partition are one `RecordBatch`, delivered as one
event to every stream subscribed to the topic. A stage applies a batch, then acks it; the
consumer commits up to the end of the acked batches of the current generation.

Where a partition starts reading is the state's to say: on assignment the consumer seeks each
partition to the offset after the one its Redis state has applied (`resume_from`), so a Redis
that lost its newest writes re-reads them from Kafka.

faust internals relied on (tests/unit/test_faust_internals.py fails loudly when they change):
`TRANSPORTS.aliases`; the aiokafka `Consumer._wait_next_records`, `_to_message`, `_add_gap`,
`_new_offset`, `ack`, `perform_seek`, `seek`, `_seek`, `_commit` and the `_read_offset`, `_acked`,
`_acked_index`, `_committed_offset` and `_n_acked` fields; `Conductor._build_handler`; the
consumer thread's `on_start` and its aiokafka fetcher's `_prefetch_backoff` and `_fetch_max_wait_ms`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from faust.events import Event
from faust.transport.conductor import Conductor
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as kafka_driver
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage

log = logging.getLogger(__name__)

SCHEME = "citybrain"
# While any partition of a broker still has fetched records waiting to be taken, aiokafka sends
# that broker no fetch for up to this long (100 ms by default). A partition paused because its
# stage is behind (a traffic backlog) then held back every other partition's next fetch: a depth
# reading that closes a road waited up to 100 ms behind traffic it has nothing to do with
# (closure-to-CAP p99 at 10,000 readings/s: 132 ms, 37-62 ms at 5 ms).
PREFETCH_BACKOFF_S = 0.005
# How long the broker holds a fetch that finds nothing new. One fetch per broker is in flight at a
# time, so a busy partition left out of a fetch of quiet ones waits for it: 1.5 s at faust's
# setting, and with the short wait above a busy partition was often left out (one busy traffic
# partition of four: 12,000-22,000 readings/s; 31,000-42,000/s at 50 ms). Idle, a worker asks
# each broker twenty times a second.
FETCH_MAX_WAIT_MS = 50


class RecordBatch(list):
    """The records (aiokafka `ConsumerRecord`s) fetched for one topic partition, in offset order."""

    __slots__ = ("tp",)

    def __init__(self, tp: TP, records: Iterable[Any]):
        super().__init__(records)
        self.tp = tp


# Where each assigned partition resumes (the offset after the one the state has applied), told
# where the group had read each to (its committed offsets).
Positions = Callable[[set[TP], dict[TP, int]], Awaitable[dict[TP, int]]]
_resume_from: Positions | None = None


def resume_from(positions: Positions) -> None:
    """Let the state say where assigned partitions resume reading."""
    global _resume_from
    _resume_from = positions


class BatchConsumerThread(kafka_driver.AIOKafkaConsumerThread):
    """The thread that runs the aiokafka consumer, with short waits between and within a broker's fetches."""

    async def on_start(self) -> None:
        await super().on_start()
        consumer = self._consumer
        assert consumer is not None  # made by the start above
        consumer._fetcher._prefetch_backoff = PREFETCH_BACKOFF_S
        consumer._fetcher._fetch_max_wait_ms = FETCH_MAX_WAIT_MS


class BatchConsumer(kafka_driver.Consumer):
    """faust's aiokafka consumer, yielding one message per fetched topic-partition batch."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Per partition, the (generation, last offset) of each batch handed out, in order.
        self._handed_out: dict[TP, deque[tuple[int, int]]] = {}

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        if not records:
            return records, active
        batched = {}
        for tp, fetched in records.items():
            start = self._read_offset[tp]
            if start is not None and fetched[0].offset < start:  # as faust's drain drops them
                fetched = [r for r in fetched if r.offset >= start]
            if fetched:
                batched[tp] = [RecordBatch(tp, fetched)]
        return batched, active

    def _to_message(self, tp: TP, batch: RecordBatch) -> ConsumerMessage:
        last = batch[-1]
        generation = self.app.consumer_generation_id
        self._handed_out.setdefault(tp, deque()).append((generation, last.offset))
        # The batch stands where faust has a record's bytes.
        value: Any = batch
        time: Any = last.timestamp / 1000.0 if last.timestamp is not None else None
        return ConsumerMessage(last.topic, last.partition, last.offset, time, last.timestamp_type,
                               None, None, value, None, 0, 0, tp, generation_id=generation)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Batches skip offsets by design: their records are all there, none is a gap."""

    def ack(self, message: Message) -> bool:
        if message.generation_id != self.app.consumer_generation_id:
            # Fetched before a rebalance: the partition may be another worker's now.
            message.acked = True
            return False
        if super().ack(message):
            self._n_acked += len(cast(RecordBatch, message.value)) - 1  # broker_commit_every counts events
            return True
        return False

    def _new_offset(self, tp: TP) -> int | None:
        """The offset after the longest run of acked batches handed out in this generation."""
        handed_out = self._handed_out.get(tp)
        acked = self._acked_index[tp]
        generation = self.app.consumer_generation_id
        end = None
        while handed_out:
            batch_generation, last = handed_out[0]
            if batch_generation == generation and last not in acked:
                break
            handed_out.popleft()
            if batch_generation == generation:
                acked.discard(last)
                end = last + 1
        if end is not None:
            self._acked[tp] = [o for o in self._acked[tp] if o >= end]
        return end

    async def _seek(self, partition: TP, offset: int) -> None:
        # In the consumer's own thread: faust's seeks from the calling one, and aiokafka's fetcher
        # is not thread-safe (a seek in a rebalance dropped a partition's fetched records while the
        # thread was taking them, and the Fetcher crashed on the KeyError).
        await self._thread.call_thread(self._thread.seek, partition, offset)  # type: ignore[arg-type]  # runs a plain call too

    async def perform_seek(self) -> None:
        await super().perform_seek()
        assigned = set(self.assignment())
        if _resume_from is None or not assigned:
            return
        read = {tp: offset for tp in assigned if (offset := self._committed_offset.get(tp)) is not None}
        positions = await _resume_from(assigned, read)
        for tp, offset in positions.items():
            await self.seek(tp, offset)
        # Where the state is ahead of the group (a worker died between its Redis commit and its
        # group commit), the group learns it now: with nothing left to read, no ack would tell it.
        ahead = {tp: offset for tp, offset in positions.items() if offset > (self._committed_offset.get(tp) or 0)}
        if ahead and await self._commit(ahead):
            self._committed_offset.update(ahead)
        log.info("resumed %d partitions where their state left off", len(positions))


class BatchConductor(Conductor):
    """Delivers each batch message as one event to every stream subscribed to its topic."""

    def _build_handler(self, tp: TP, channels: Any) -> Callable[[Message], Awaitable[None]]:
        app = self.app
        acquire_flow_control = app.flow_control.acquire
        consumer = app.consumer

        def pressure_high() -> None:
            consumer.on_buffer_full(tp)  # stop fetching this partition until its streams catch up

        def pressure_drop() -> None:
            consumer.on_buffer_drop(tp)

        async def deliver(message: Message) -> None:
            await acquire_flow_control()
            if not channels:
                return
            message.incref(len(channels))
            event = Event(app, None, message.value, None, message)
            blocked = []
            for chan in channels:
                if chan.queue.full():
                    blocked.append(chan)
                else:
                    chan.queue.put_nowait_enhanced(event, on_pressure_high=pressure_high, on_pressure_drop=pressure_drop)
            if blocked:
                # Each blocking put in a task of its own: a rebalance clearing the queues cancels
                # the put quietly instead of the Fetcher that called us.
                await asyncio.wait([asyncio.ensure_future(chan.put(event)) for chan in blocked])

        return deliver


class Transport(kafka_driver.Transport):
    """aiokafka underneath, batches above: selected by a `citybrain://` broker URL."""

    Consumer = BatchConsumer
    Conductor = BatchConductor


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
