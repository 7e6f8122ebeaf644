"""Publishing onto the system's topics, for the simulator, replay and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.contract import encode
from streams.app import partition_for
from streams.clients import kafka_auth
from streams.settings import Settings
from streams.topics import topic_name

LINGER_S = 0.005  # how long a record may wait for its batch to fill


class Publisher:
    """An async producer that builds one record batch per topic partition, ships the batches
    every few milliseconds (as a producer's linger would), and waits for them in bulk.

    Building the batches here, rather than handing the producer one record at a time, lets one
    process publish about three times as many records: a benchmark's load must not be what it
    measures. Records take the partition the producer would give them (murmur2 of the key).
    """

    def __init__(self, settings: Settings, in_flight: int = 20_000):
        self.settings = settings
        self.in_flight = in_flight
        self._producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_batch_size=1 << 20, acks="all",
                                          **kafka_auth(settings))
        self._partitioner = partition_for
        self._partitions: dict[str, list[int]] = {}
        self._building: dict[tuple[str, int], Any] = {}  # (topic, partition) -> batch being filled
        self._shipping = asyncio.Lock()  # batches of a partition leave in the order they were filled
        self._pending: list[asyncio.Future] = []
        self._unflushed = 0
        self._linger: asyncio.Task | None = None
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        self._linger = asyncio.create_task(self._ship_now_and_then())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.flush()
        finally:
            if self._linger is not None:
                self._linger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._linger
            await self._producer.stop()

    async def send_raw(self, role: str, key: str | None, value: bytes | None) -> None:
        topic = topic_name(role, self.settings)
        partitions = self._partitions.get(topic) or await self._partitions_of(topic)
        key_bytes = key.encode() if key is not None else None
        partition = self._partitioner(key_bytes, partitions, partitions)
        batch = self._building.get((topic, partition))
        if batch is None:
            batch = self._building[(topic, partition)] = self._producer.create_batch()
        if batch.append(key=key_bytes, value=value, timestamp=None) is None:  # full: ship, start another
            await self._ship()
            batch = self._building[(topic, partition)] = self._producer.create_batch()
            batch.append(key=key_bytes, value=value, timestamp=None)
        self.sent += 1
        self._unflushed += 1
        if self._unflushed >= self.in_flight:
            await self.flush()

    async def send(self, role: str, key: str, record: Any) -> None:
        await self.send_raw(role, key, encode(record))

    async def flush(self) -> None:
        """Ship every batch and wait until Kafka has taken them."""
        await self._ship()
        pending, self._pending, self._unflushed = self._pending, [], 0
        if pending:
            await asyncio.gather(*pending)

    async def _ship(self) -> None:
        async with self._shipping:
            building, self._building = self._building, {}
            for (topic, partition), batch in building.items():
                self._pending.append(await self._producer.send_batch(batch, topic, partition=partition))

    async def _ship_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(LINGER_S)
            await self._ship()

    async def _partitions_of(self, topic: str) -> list[int]:
        self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return self._partitions[topic]
