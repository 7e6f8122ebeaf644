"""The faust application: one per worker, its stages registered by the modules of `agents/`."""

from __future__ import annotations

import gc
import logging
import math
import time
from collections import Counter
from functools import lru_cache

import faust
from aiokafka.partitioner import DefaultPartitioner, murmur2

from streams import batching, clients
from streams.settings import settings

_s = settings()


# Objects made between two collections of the youngest generation. Python's 700 suits short
# scripts; a worker makes a few objects per event and keeps large state, so at 700 the
# collector's passes over the young objects cost a fifth of a traffic reading's time. Higher
# gained nothing measurable and let a worker holding 50,000 segments' windows grow by 10 MiB.
GC_YOUNG_THRESHOLD = 10_000


@lru_cache(maxsize=1 << 14)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Kafka's default partitioner (murmur2 of the key, as the Java client and aiokafka place keys), with
    the hashes of recent keys remembered. The client's murmur2 is pure Python, 12 us a key, paid
    for every record sent, and the same people, plates and incidents come back again and again."""
    if key is None:
        return _spread(key, all_partitions, available)
    return all_partitions[_key_hash(key) % len(all_partitions)]


_spread = DefaultPartitioner()


class Repeats(logging.Filter):
    """Lets through one record of a kind (logger and message) from the Kafka clients per
    `every_s` seconds, and says how many like it were held back. A broker that is down makes
    its clients retry several times a second, each retry an error line: 1,343 lines in 20 s
    before this. The city brain's own lines (a dead letter, a re-read) all go through."""

    NOISY = ("aiokafka", "kafka")

    def __init__(self, every_s: float = 10.0):
        super().__init__()
        self.every_s = every_s
        self.last: dict[tuple[str, str], float] = {}
        self.held: Counter[tuple[str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.NOISY):
            return True
        kind, now = (record.name, str(record.msg)), time.monotonic()
        if now - self.last.get(kind, -math.inf) < self.every_s:
            self.held[kind] += 1
            return False
        self.last[kind] = now
        if held := self.held.pop(kind, 0):
            record.msg = f"{record.msg} [and {held} more like this in the last {self.every_s:.0f} s]"
        return True


class Worker(faust.Worker):
    """faust's worker without its terminal spinner (at `-l warn` the spinner turns the root
    logger to DEBUG, so every debug call of every library builds a log record: a tenth of a
    worker's time when it re-keys events), and with the collector tuned for a stream of events."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spinner = None
        gc.collect()
        gc.freeze()  # what the worker was built from (modules, faust, the app) is never garbage
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        repeats = Repeats()
        for handler in logger.handlers:
            handler.addFilter(repeats)


app = faust.App(
    _s.app_id,
    broker=f"{batching.SCHEME}://{_s.kafka_bootstrap}",  # every topic is read in batches
    broker_credentials=clients.broker_credentials(_s),
    value_serializer="raw",
    key_serializer="raw",
    store="memory://",
    topic_partitions=_s.partitions,
    topic_allow_declare=False,  # topics are created by `citybrain topics`, with their configs
    web_port=_s.web_port,
    stream_buffer_maxsize=16,  # batches, not events: a partition pauses while its stream catches up
    broker_commit_every=_s.batch_max,
    consumer_auto_offset_reset="earliest",
    # A worker that dies is replaced in the group within seconds, not a minute.
    broker_session_timeout=_s.session_timeout_s,
    broker_heartbeat_interval=max(1.0, _s.session_timeout_s / 4),
    Worker=Worker,
    # A stopping worker does not wait for batches still queued: its state says where it got to,
    # and the next owner of a partition resumes there.
    stream_wait_empty=False,
    producer_partitioner=partition_for,
)

