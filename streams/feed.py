"""Publishing onto the system's topics, for the simulator, replay and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.contract import encode
from streams.settings import Settings
from streams.topics import topic_name


class Publisher:
    """An async producer that keeps many sends in flight and waits for them in bulk."""

    def __init__(self, settings: Settings, in_flight: int = 20_000):
        self.settings = settings
        self.in_flight = in_flight
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, max_batch_size=1 << 20, acks="all"
        )
        self._pending: list[asyncio.Future] = []
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def send_raw(self, role: str, key: str | None, value: bytes | None) -> None:
        self._pending.append(
            await self._producer.send(topic_name(role, self.settings), value=value, key=key.encode() if key is not None else None)
        )
        self.sent += 1
        if len(self._pending) >= self.in_flight:
            await self.flush()

    async def send(self, role: str, key: str, record: Any) -> None:
        await self.send_raw(role, key, encode(record))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
