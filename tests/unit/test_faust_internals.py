"""The faust internals the batch path (streams/batching.py) stands on.

faust is pinned; these fail loudly when an upgrade renames, reshapes or stops calling what the
batch consumer and conductor override, instead of the worker quietly falling back to
per-event delivery or committing the wrong offsets.
"""

from __future__ import annotations

import inspect
from collections import defaultdict, deque
from importlib.metadata import version
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer
from faust.transport import conductor as faust_conductor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as kafka_driver
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams import batching
from streams.batching import BatchConsumer, RecordBatch


def test_faust_and_aiokafka_are_the_pinned_versions():
    assert version("faust-streaming") == "0.15.3"
    assert version("aiokafka") == "0.14.0"
    assert version("mode-streaming") == "0.7.1"


def test_the_citybrain_scheme_selects_the_batch_transport():
    assert TRANSPORTS.by_url(f"{batching.SCHEME}://127.0.0.1:19092") is batching.Transport
    assert batching.Transport.Consumer is BatchConsumer
    assert batching.Transport.Conductor is batching.BatchConductor


def test_the_app_reads_through_the_batch_transport():
    from streams.app import app

    assert app.conf.broker[0].scheme == batching.SCHEME


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_overridden_consumer_methods_keep_their_signatures():
    base = kafka_driver.Consumer
    assert params(base._wait_next_records) == ["self", "timeout"]
    assert params(base._to_message) == ["self", "tp", "record"]
    assert params(base._add_gap) == ["self", "tp", "offset_from", "offset_to"]
    assert params(base._new_offset) == ["self", "tp"]
    assert params(base.ack) == ["self", "message"]
    assert params(base.perform_seek) == ["self"]
    assert params(base.seek) == ["self", "partition", "offset"]
    assert params(base._seek) == ["self", "partition", "offset"]
    assert params(base._commit) == ["self", "offsets"] and inspect.iscoroutinefunction(base._commit)
    assert params(faust_conductor.Conductor._build_handler) == ["self", "tp", "channels"]
    for coroutine in (base._wait_next_records, base._add_gap, base.perform_seek, base.seek, base._seek):
        assert inspect.iscoroutinefunction(coroutine)


def test_the_drain_loop_still_calls_what_the_batch_consumer_overrides():
    drain = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert "getmany(timeout=1.0)" in drain
    assert "self._add_gap(tp, r_offset + 1, offset)" in drain
    assert "callback(message), self.suspend_flow.wait()" in drain
    assert "self._n_acked >= commit_every" in drain
    assert "offset >= r_offset" in drain  # the batch consumer drops records below it the same way
    getmany = inspect.getsource(faust_consumer.Consumer.getmany)
    assert "await self._wait_next_records(timeout)" in getmany
    assert "to_message(tp, record)" in getmany
    filter_offsets = inspect.getsource(faust_consumer.Consumer._filter_committable_offsets)
    assert "self._new_offset(tp)" in filter_offsets
    final_ack = inspect.getsource(ConsumerMessage.on_final_ack)
    assert "consumer.ack(self)" in final_ack


def test_the_consumer_thread_and_its_fetcher_are_what_the_short_fetch_wait_sets():
    from aiokafka.consumer import fetcher

    assert params(kafka_driver.Consumer._new_consumer_thread) == ["self"]
    assert "AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)" in inspect.getsource(
        kafka_driver.Consumer._new_consumer_thread)
    on_start = inspect.getsource(kafka_driver.AIOKafkaConsumerThread.on_start)
    assert "self._consumer = self._create_consumer(" in on_start and "await self._consumer.start()" in on_start
    # The fetcher is made at start and reads the wait each time fetched records are kept.
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start)
    assert inspect.signature(fetcher.Fetcher).parameters["prefetch_backoff"].default == 0.1
    assert "backoff=self._prefetch_backoff" in inspect.getsource(fetcher.Fetcher._proc_fetch_request)
    assert "node_id in backoff_by_nodes" in inspect.getsource(fetcher.Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms," in inspect.getsource(fetcher.Fetcher._get_actions_per_node)
    assert "fetch_max_wait_ms=1500" in inspect.getsource(kafka_driver.AIOKafkaConsumerThread._create_worker_consumer)


def test_the_consumer_thread_shortens_its_fetchers_waits(monkeypatch):
    import asyncio

    fetcher = SimpleNamespace(_prefetch_backoff=0.1, _fetch_max_wait_ms=1500)

    async def started(self) -> None:  # as faust's: the aiokafka consumer made and started
        self._consumer = SimpleNamespace(_fetcher=fetcher)

    monkeypatch.setattr(kafka_driver.AIOKafkaConsumerThread, "on_start", started)
    asyncio.run(batching.BatchConsumerThread.__new__(batching.BatchConsumerThread).on_start())
    assert fetcher._prefetch_backoff == batching.PREFETCH_BACKOFF_S < 0.1
    assert fetcher._fetch_max_wait_ms == batching.FETCH_MAX_WAIT_MS < 1500


def test_the_apps_consumer_runs_aiokafka_in_the_batch_consumer_thread():
    from streams.app import app

    thread = app.consumer._thread
    assert type(app.consumer) is BatchConsumer
    assert type(thread) is batching.BatchConsumerThread and isinstance(thread, kafka_driver.AIOKafkaConsumerThread)


def test_the_consumer_fields_the_batch_consumer_reads_are_still_there():
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    for name in ("self._acked = ", "self._acked_index = ", "self._read_offset = ", "self._committed_offset = "):
        assert name in init
    assert faust_consumer.Consumer._n_acked == 0


def test_recovery_seeks_through_perform_seek():
    from faust.tables import recovery

    assert "consumer.perform_seek()" in inspect.getsource(recovery.Recovery)


def test_a_seek_moves_the_fetcher_from_the_consumers_own_thread():
    import asyncio

    assert "await self._seek(partition, offset)" in inspect.getsource(faust_consumer.Consumer.seek)
    assert "self._thread.seek(partition, offset)" in inspect.getsource(kafka_driver.Consumer._seek)
    seeks, in_thread = [], []

    async def call_thread(fun, *args):
        in_thread.append(True)
        return fun(*args)

    c = object.__new__(BatchConsumer)
    c._thread = SimpleNamespace(call_thread=call_thread, seek=lambda tp, offset: seeks.append((tp, offset, bool(in_thread))))
    asyncio.run(c._seek(TP0, 7))
    assert seeks == [(TP0, 7, True)]


def consumer(generation: int = 1) -> BatchConsumer:
    """A batch consumer with only the fields its offset bookkeeping uses."""
    c = object.__new__(BatchConsumer)
    c.app = SimpleNamespace(consumer_generation_id=generation, topics=SimpleNamespace(acks_enabled_for=lambda t: True))
    c._handed_out = {}
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._committed_offset = defaultdict(lambda: None)
    c._unacked_messages = set()
    c._n_acked = 0
    c._waiting_for_ack = None
    return c


TP0 = TP("traffic.readings", 0)


def batch_message(c: BatchConsumer, first: int, last: int) -> ConsumerMessage:
    records = [SimpleNamespace(topic=TP0.topic, partition=0, offset=o, timestamp=1_000, timestamp_type=0)
               for o in range(first, last + 1)]
    return c._to_message(TP0, RecordBatch(TP0, records))


def test_a_batch_is_one_message_at_its_last_offset_carrying_every_record():
    c = consumer()
    m = batch_message(c, 10, 14)
    assert (m.offset, len(m.value), m.value.tp, m.generation_id) == (14, 5, TP0, 1)


def test_commits_reach_the_end_of_the_acked_batches_in_order_only():
    c = consumer()
    first, second, third = batch_message(c, 0, 99), batch_message(c, 100, 149), batch_message(c, 150, 151)
    assert c.ack(second)
    assert c._new_offset(TP0) is None  # the first batch is not applied yet
    assert c.ack(first)
    assert c._new_offset(TP0) == 150
    assert c._n_acked == 150  # events, for broker_commit_every
    assert c.ack(third) and c._new_offset(TP0) == 152
    assert c._new_offset(TP0) is None


def test_batches_from_before_a_rebalance_are_never_committed():
    c = consumer(generation=1)
    stale = batch_message(c, 0, 9)
    c.app.consumer_generation_id = 2
    fresh = batch_message(c, 0, 9)  # re-fetched after the partition came back
    assert not c.ack(stale)
    assert c._new_offset(TP0) is None
    assert c.ack(fresh) and c._new_offset(TP0) == 10
    assert not c._handed_out[TP0] or deque(c._handed_out[TP0]) == deque()


def test_records_are_placed_as_kafka_places_them_by_the_apps_own_partitioner():
    import random

    from aiokafka.partitioner import DefaultPartitioner

    from streams.app import app, partition_for

    assert app.conf.producer_partitioner is partition_for
    assert '"partitioner": self.partitioner' in inspect.getsource(kafka_driver.Producer._settings_default)
    kafka = DefaultPartitioner()
    rng = random.Random(7)
    for _ in range(3):  # the second and third time from what it remembers
        for size in range(1, 60):
            key = bytes(rng.getrandbits(8) for _ in range(size))
            for n in (1, 3, 12, 16):
                assert partition_for(key, list(range(n)), list(range(n))) == kafka(key, list(range(n)), list(range(n)))
        rng = random.Random(7)
    assert partition_for(None, [0, 1, 2], [2]) == 2  # no key: spread over what is available


def test_the_offset_asker_can_tell_its_client_of_every_topic_before_one_metadata_round():
    from aiokafka import client
    from aiokafka.consumer import fetcher

    # runtime.Consumed tells the asker's client of every topic, then asks where they end: an
    # unknown topic would otherwise be learnt one metadata round at a time, inside end_offsets.
    assert "self._client = AIOKafkaClient(" in inspect.getsource(AIOKafkaConsumer.__init__)
    add_topic = inspect.getsource(client.AIOKafkaClient.add_topic)
    assert "self.force_metadata_update()" in add_topic and "self._topics.add(topic)" in add_topic
    assert "if self._md_update_fut is None:" in inspect.getsource(client.AIOKafkaClient.force_metadata_update)
    offsets = inspect.getsource(fetcher.Fetcher._proc_offset_requests)
    assert "self._client.add_topic(partition.topic)" in offsets and "raise Errors.StaleMetadata(partition)" in offsets
