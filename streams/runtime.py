"""What every worker shares: the Redis connection, the state store, the city map, and the
hooks that keep the stages' partitions in step with the consumer group, and `/metrics`.

Stages are declared when their modules are imported; the objects that run them (the Redis
client, the city map's consumer, one processor per stage) are built when the worker first needs
them, so importing a stage connects to nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from functools import cache

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.reference import CityMap
from streams import batching, clients, metrics
from streams.app import app
from streams.processor import Processor
from streams.reference import Reference
from streams.settings import settings
from streams.stage import Stage
from streams.state import StateStore
from streams.table import Table
from streams.table import declared as declared_tables
from streams.topics import partitions_of, topic_name

log = logging.getLogger(__name__)

declared: list[type[Stage]] = []
ASK_KAFKA_S = 3.0  # how long the timer waits for Kafka to say where partitions end
ENDS_KEPT_S = 0.5  # the answer serves every stage of one round of the timer (once a second)


class Live:
    """The worker's running objects."""

    def __init__(self) -> None:
        s = settings()
        self.redis = clients.async_redis(s)
        state, reference = StateStore(self.redis), Reference(s)
        self.reference = reference
        self.consumed = consumed = Consumed()
        self.processors = {cls: Processor(cls, state, reference, s, consumed) for cls in declared}


class Consumed:
    """The source topics as this worker's consumer reads them."""

    def __init__(self) -> None:
        self.unanswered_at = -math.inf
        self._asker: AIOKafkaConsumer | None = None
        self._ends: dict[tuple[str, int], int] = {}
        self._ends_at = -math.inf
        self._closed = False

    async def earliest(self, topic: str, partition: int) -> int:
        tp = TopicPartition(topic, partition)
        return (await (await self._kafka()).beginning_offsets([tp]))[tp]

    async def reread(self, topic: str, partition: int, offset: int) -> None:
        # In the consumer's own thread (`seek` would move its fetcher from this one, mid-fetch).
        await app.consumer.seek_wait({TP(topic, partition): offset})

    async def ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        # Every stage asks in turn, once a second: one question for all the worker's partitions
        # answers them all, and one that waited for nothing spares the others the wait.
        now = time.monotonic()
        if now - self.unanswered_at < ASK_KAFKA_S:
            raise TimeoutError("Kafka did not answer a moment ago")
        if now - self._ends_at >= ENDS_KEPT_S or not all(tp in self._ends for tp in partitions):
            try:
                self._ends = await asyncio.wait_for(self._all_ends(partitions), timeout=ASK_KAFKA_S)
            except Exception:
                self.unanswered_at = time.monotonic()
                raise
            self._ends_at = now
        return {tp: self._ends[tp] for tp in partitions if tp in self._ends}

    async def _all_ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        wanted = {TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()}
        wanted.update(TopicPartition(t, p) for t, p in partitions)
        asker = await self._kafka()
        # aiokafka learns of a topic it does not know one at a time, a metadata round each (0.1 s
        # apiece: over the timer's wait for a city's forty topics); told of all at once, one round.
        await asyncio.gather(*(asker._client.add_topic(t) for t in {tp.topic for tp in wanted}))
        ends = await asker.end_offsets(list(wanted))
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def close(self) -> None:
        self._closed = True
        asker, self._asker = self._asker, None
        if asker is not None:
            await asker.stop()

    async def _kafka(self) -> AIOKafkaConsumer:
        # A client of its own, on this loop, for questions about offsets: the group's consumer
        # answers from its thread only between two fetches, 1.5 s a question here.
        if self._closed:
            raise RuntimeError("the worker is stopping")
        if self._asker is None:
            s = settings()
            asker = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False, **clients.kafka_auth(s))
            await asker.start()
            self._asker = asker
        return self._asker


@cache
def live() -> Live:
    return Live()


def processor(cls: type[Stage]) -> Processor:
    """The processor running a declared stage in this worker."""
    return live().processors[cls]


async def read_table(cls: type[Stage], name: str) -> dict:
    """A stage's table over every partition of its source, as Redis holds it: what a worker's
    pages answer with, for the partitions other workers hold as much as for its own."""
    s = settings()
    return await declared_tables(cls, Table)[name].fetch_all(live().redis, s.key_prefix, cls.name,
                                                             range(partitions_of(cls.source, s)))


async def current_city(now: bool = False) -> CityMap:
    """The city map, read up to what has been published (at most once per `reference_refresh_s`,
    unless asked for `now`)."""
    reference = live().reference
    await reference.catch_up(now)
    return reference.city


def declared_stage(name: str) -> type[Stage]:
    """The stage declared under this name (its module imported)."""
    (cls,) = [cls for cls in declared if cls.name == name]
    return cls


def stage(cls: type[Stage]) -> None:
    """Declare a stage, with its agent (named as the stage: one name for the agent, its Redis
    keys and its metrics) that hands its processor the batches of its source topic and of the
    topics it reads alongside (`cls.alongside`)."""
    s = settings()
    declared.append(cls)
    agent = cls.name

    async def run(stream) -> None:
        p = processor(cls)
        async for batch in stream:
            await p.process(batch)

    run.__name__ = run.__qualname__ = agent
    app.agent(app.topic(*(topic_name(role, s) for role in (cls.source, *cls.alongside))), name=agent)(run)


def highwater(topic: str, partition: int) -> int | None:
    """The end offset of a partition this worker is assigned, as its consumer last saw it."""
    tp = TP(topic, partition)
    return app.consumer.highwater(tp) if tp in app.consumer.assignment() else None


def partition_gauges() -> Iterator[metrics.Gauges]:
    """The gauges of every partition held here, and how far each stage is behind."""
    if live.cache_info().currsize == 0:
        return  # nothing running yet
    for p in live().processors.values():
        for owned in list(p.stages.values()):
            yield owned.stage.gauges()
        yield p.lag(highwater)


metrics.CITY.sources.append(partition_gauges)


async def applied_positions(assigned: set[TP], read: dict[TP, int]) -> dict[TP, int]:
    """Where each assigned partition resumes: after the offset its stages' state has applied
    (the start when none has), the lowest where several stages read one topic. Asked of Redis
    until it answers: a rebalance while Redis restarts waits for it, rather than crash. Any
    failure is asked again, not only Redis's own errors: the cluster client can fail otherwise
    while a master is down (a connection torn down under a write it shares raised AttributeError),
    and a failure here stops the worker."""
    delay = 0.5
    while True:
        try:
            return await _applied_positions(assigned, read)
        except Exception as exc:  # noqa: BLE001  reads only: asking again is always safe
            log.warning("where %d assigned partitions resume is kept in Redis, which does not answer (%s); "
                        "asking again in %.1f s", len(assigned), f"{type(exc).__name__}: {exc}", delay)
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)


async def _applied_positions(assigned: set[TP], read: dict[TP, int]) -> dict[TP, int]:
    """A state behind where the group had read to lost writes (Redis restarted without them, or
    restored from an older copy, or emptied): it is said loudly, and the input is read again."""
    running = live()
    wanted = [(p, tp, p.offset_key(tp.topic, tp.partition))
              for p in running.processors.values() for tp in assigned if tp.topic in p.offset_names]
    async with running.redis.pipeline(transaction=False) as pipe:  # keys of many slots: no MGET
        for *_, key in wanted:
            pipe.get(key)
        applied = await pipe.execute()
    positions: dict[TP, int] = {}
    for (p, tp, _), offset in zip(wanted, applied):
        at = int(offset) + 1 if offset is not None else 0
        positions[tp] = min(at, positions.get(tp, at))
        p.read_to[tp.topic, tp.partition] = read.get(tp, 0)
        # The group's offsets may run one batch ahead of Redis (a batch is acknowledged while its
        # commit travels); further behind, the state lost writes.
        if read.get(tp, 0) > at + p.settings.batch_max:
            log.error("%s: the state of %s[%d] has applied up to offset %d but the group had read to %d: Redis lost "
                      "the writes between; reading them again from Kafka", p.name, tp.topic, tp.partition, at - 1,
                      read[tp])
            metrics.STATE_REREADS.labels(p.name).inc()
    return positions


batching.resume_from(applied_positions)


@app.page("/metrics")
async def serve_metrics(web, request):  # noqa: ARG001
    """The worker's Prometheus metrics, on its web port."""
    return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@app.timer(interval=1.0)
async def close_silent_windows() -> None:
    for p in live().processors.values():
        await p.tick()


@app.timer(interval=settings().reference_refresh_s)
async def follow_the_map() -> None:
    """The map and the subscriptions made through the API are read up to what was published
    every `reference_refresh_s`, whether or not an event names something new: a changed zone, or
    a subscription made on another worker, reaches this one too."""
    try:
        await current_city()
    except Exception as exc:  # Kafka away, or the worker stopping: the next round tries again
        log.warning("the city map could not be read (%s); trying again", exc)


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust types its receivers as taking *args
async def close_kafka_clients(app, **kwargs) -> None:  # noqa: ARG001
    if live.cache_info().currsize:
        await live().consumed.close()
        await live().reference.stop()


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust types its receivers as taking *args
async def load_assigned(app, assigned, **kwargs) -> None:  # noqa: ARG001
    # A partition's state is loaded as soon as it is ours, not at its next event: a quiet
    # partition's windows still close on the timer, and its webhook retries still go out.
    for p in live().processors.values():
        await p.load(tp.partition for tp in assigned if tp.topic == p.topic)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust types its receivers as taking *args
async def forget_revoked(app, revoked, **kwargs) -> None:  # noqa: ARG001
    # Another worker may take these over; state is reloaded from Redis if they come back.
    for p in live().processors.values():
        p.forget(revoked)
