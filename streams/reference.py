"""The city's reference data, read from its compacted topics and kept current.

Every worker holds the whole (small) city map, as a global table would: joins against it need
no network round trip. The map is loaded to the topics' end before the first event is processed
and followed afterwards. The webhook subscriptions made through the API come the same way, so
every worker sees a change within `reference_refresh_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import reference as ref
from schemas.contract import Rejected, decode
from schemas.webhooks import Subscription
from streams.clients import kafka_auth
from streams.settings import Settings
from streams.topics import REFERENCE, topic_name

log = logging.getLogger(__name__)

CONTRACTS = {
    "zones": (ref.Zone, "zone_id"),
    "segments": (ref.Segment, "segment_id"),
    "intersections": (ref.Intersection, "intersection_id"),
    "points": (ref.WaterloggingPoint, "point_id"),
    "gauges": (ref.RainGauge, "gauge_id"),
    "lots": (ref.Lot, "lot_id"),
    "venues": (ref.Venue, "venue_id"),
}


class Reference:
    """The city map, and the consumer that keeps it current."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.city = ref.CityMap()
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        self._last_catch_up = 0.0
        self.topics = {topic_name(role, settings): role for role in (*REFERENCE, "webhook_subscriptions")}  # name -> role
        self.approaches: dict[str, str] = {}  # approach_id -> intersection_id
        self.subscriptions: dict[str, Subscription] = {}  # made through the API, by id

    async def start(self) -> None:
        """Read every reference topic to its current end."""
        if self._consumer is not None:
            return  # started: every batch asks, and must not wait while another stage catches up
        async with self._lock:
            if self._stopped:
                raise RuntimeError("the city map's reader has stopped: the worker is stopping")
            if self._consumer is None:
                consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                                            **kafka_auth(self.settings))
                try:
                    await consumer.start()
                    partitions = [TopicPartition(t, 0) for t in self.topics]
                    consumer.assign(partitions)
                    await consumer.seek_to_beginning(*partitions)
                    await self._read_to_end(consumer)
                except BaseException:
                    await consumer.stop()
                    raise
                # Only now: a stage that finds the reader started finds the whole map read.
                self._consumer = consumer

    async def stop(self) -> None:
        async with self._lock:  # not in the middle of a catch-up
            self._stopped = True
            if self._consumer is not None:
                await self._consumer.stop()
                self._consumer = None

    async def catch_up(self, now: bool = False) -> None:
        """Read what has been published since; at most once per `reference_refresh_s`, unless
        asked for `now` (a change just published, to be read back)."""
        await self.start()
        if not now and time.monotonic() - self._last_catch_up < self.settings.reference_refresh_s:
            return
        async with self._lock:
            if self._consumer is None:
                raise RuntimeError("the city map's reader has stopped: the worker is stopping")
            await self._read_to_end(self._consumer)

    async def _read_to_end(self, consumer: AIOKafkaConsumer) -> None:
        partitions = list(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                for message in messages:
                    self._apply(tp.topic, message.key, message.value)
        self._last_catch_up = time.monotonic()

    def _apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        role = self.topics[topic]
        contract, id_field = CONTRACTS.get(role) or (Subscription, "subscription_id")
        table: dict[str, Any] = getattr(self.city, role) if role in CONTRACTS else self.subscriptions
        if value is None:  # a tombstone removes the record
            if key is not None:
                table.pop(key.decode(), None)
        else:
            try:
                record: Any = decode(contract, value)
            except Rejected as exc:
                log.warning("reference record on %s rejected: %s", topic, exc.reason)
                return
            table[getattr(record, id_field)] = record
        if role == "intersections":
            self.approaches = {a.approach_id: j.intersection_id for j in table.values() for a in j.approaches}
