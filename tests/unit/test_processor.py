"""The processor in process (streams/tools/harness.py): redeliveries, dead letters, fencing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import orjson
import pytest
from faust.types import TP

from agents.traffic import TrafficStage
from schemas.contract import encode, to_dict
from schemas.events import TrafficReading
from streams import topics
from streams.batching import RecordBatch
from streams.effects import Source, Sources
from streams.settings import Settings
from streams.state import Batch
from streams.tools.harness import FixedReference, HarnessProcessor, MemoryState, Record, place, run_stage
from streams.tools.simulate import build_city
from streams.topics import topic_name

S = Settings(privacy_keys=("k1:processor-unit-test-key",))
CITY = build_city(seed=7)
SEGMENT = sorted(CITY.segments)[0]
T0 = 1_780_000_020.0


def readings(n: int, segment: str = SEGMENT) -> list:
    return [("traffic_readings", segment, TrafficReading("D1", segment, T0 + 30 * i, 10, 30.0, 40.0, 0.2))
            for i in range(n)]


def test_a_redelivered_batch_is_skipped_and_changes_nothing():
    store = MemoryState()
    events = place(readings(20), S, T0 + 3600)
    first = run_stage(TrafficStage, events, city=CITY, settings=S, state=store)
    before = {k: v for k, v in store.data.items() if not k.endswith(":commits")}
    again = run_stage(TrafficStage, events, city=CITY, settings=S, state=store)  # same offsets
    assert sum(map(len, first.sends.values())) > 0
    assert again.sends == {}
    assert {k: v for k, v in store.data.items() if not k.endswith(":commits")} == before


def test_a_bad_event_is_dead_lettered_where_it_came_from_and_the_rest_apply():
    good = readings(6)
    bad = ("traffic_readings", SEGMENT, b'{"sensor_id": "D1", "segment_id": "' + SEGMENT.encode() + b'"}')
    out = run_stage(TrafficStage, [*good[:3], bad, *good[3:]], city=CITY, settings=S, broker_time=T0 + 3600)
    (letter,) = [v for _, v in out.sent("dead_letters")]
    assert letter["source_topic"] == topic_name("traffic_readings", S) and letter["offset"] == 3
    assert letter["reason"] == "TrafficReading: missing field event_time"
    applied = {k: int(v) for k, v in out.state.items() if k.endswith(":offset")}
    assert list(applied.values()) == [6]  # every offset applied, the bad one included


def test_a_commit_built_on_state_that_moved_on_is_refused():
    store = MemoryState()
    base = "cb:{traffic.0}"
    assert asyncio.run(store.commit([Batch(base, 0, {"offset": 5}, [["SET", f"{base}:x", "a"]])])) == [1]
    stale = Batch(base, 0, {"offset": 9}, [["SET", f"{base}:x", "b"]])  # built on commit 0, not 1
    behind = Batch(base, 1, {"offset": 3}, [["SET", f"{base}:x", "c"]])  # would move the offset back
    assert asyncio.run(store.commit([stale, behind])) == [None, None]
    assert store.data[f"{base}:x"] == "a" and store.data[f"{base}:offset"] == "5"


def test_two_processors_on_one_partition_end_where_one_would():
    """A worker whose view is stale (the partition moved on under another) is refused, reloads,
    and applies only what is new: the state is the state of one uninterrupted processor."""
    reference = FixedReference(S, CITY)
    (partition,) = {p for _, p, *_ in place(readings(1), S, T0)}
    topic = topic_name("traffic_readings", S)
    records = [Record(topic, partition, o, SEGMENT.encode(), encode(r), int((T0 + 3600) * 1000))
               for o, (_, _, r) in enumerate(readings(30))]

    def batch(lo: int, hi: int) -> RecordBatch:
        return RecordBatch(TP(topic, partition), records[lo:hi])

    shared, alone = MemoryState(), MemoryState()
    a, b = HarnessProcessor(TrafficStage, shared, reference, S), HarnessProcessor(TrafficStage, shared, reference, S)
    one = HarnessProcessor(TrafficStage, alone, reference, S)

    async def go() -> None:
        for p, lo, hi in ((a, 0, 10),  # a holds the partition
                          (b, 0, 20),  # the partition moved to b, which skips 0-9 and applies 10-19
                          (a, 10, 30),  # a's view is stale: refused, reloaded, 20-29 applied
                          (one, 0, 30)):
            await p.process(batch(lo, hi))
            await p.land()

    asyncio.run(go())
    assert without_commits(shared.data) == without_commits(alone.data)
    sent = {value for p in (a, b) for sends in p.sends.values() for _, _, value, _ in sends}
    assert sent == {value for sends in one.sends.values() for _, _, value, _ in sends}


def test_a_source_is_the_six_fields_the_processor_builds_it_from():
    # The processor makes sources as plain tuples of these, in this order (Processor.process).
    assert Source._fields == ("topic", "partition", "offset", "key", "value", "timestamp")


class SlowState(MemoryState):
    """A store whose loads wait until let go, as a Redis that is slow to answer."""

    def __init__(self):
        super().__init__()
        self.go_on = asyncio.Event()

    async def load(self, *args):
        await self.go_on.wait()
        return await super().load(*args)


def test_work_beside_the_stream_sees_the_stages_only_between_batches():
    reference = FixedReference(S, CITY)
    (partition,) = {p for _, p, *_ in place(readings(1), S, T0)}
    topic = topic_name("traffic_readings", S)
    records = [Record(topic, partition, o, SEGMENT.encode(), encode(r), int((T0 + 3600) * 1000))
               for o, (_, _, r) in enumerate(readings(5))]
    store = SlowState()
    p = HarnessProcessor(TrafficStage, store, reference, S)
    seen: list[dict] = []

    async def beside() -> None:
        async with p.between_batches() as stages:
            seen.append({n: stage.windows.watermark for n, stage in stages.items()})

    async def go() -> None:
        applying = asyncio.ensure_future(p.process(RecordBatch(TP(topic, partition), records)))
        await asyncio.sleep(0.01)  # the batch is being applied: its partition's state is loading
        waiting = asyncio.ensure_future(beside())
        await asyncio.sleep(0.01)
        assert not seen and not waiting.done()
        store.go_on.set()
        await applying
        await waiting
        await p.land()

    asyncio.run(go())
    assert seen == [{partition: T0 + 30 * 4}]  # the whole batch applied, never half of it


def without_commits(data: dict) -> dict:
    return {k: v for k, v in data.items() if not k.endswith(":commits")}


class FlakyState(MemoryState):
    """A store whose commits fail at the given calls, as a Redis that drops the connection."""

    def __init__(self, failing: set[int]):
        super().__init__()
        self.failing, self.calls = failing, 0

    async def commit(self, batches):
        self.calls += 1
        if self.calls in self.failing:
            raise ConnectionError("Redis went away")
        return await super().commit(batches)


def test_a_commit_that_fails_while_the_next_batch_is_applied_is_redone_with_it():
    """The next batch is applied while a batch's commit is on its way; when that commit fails,
    both are redone from the state in Redis, and nothing is lost or counted twice."""
    reference = FixedReference(S, CITY)
    (partition,) = {p for _, p, *_ in place(readings(1), S, T0)}
    topic = topic_name("traffic_readings", S)
    # Forty detectors in one window, which is still open at the end: its count holds every one.
    records = [Record(topic, partition, o, SEGMENT.encode(),
                      encode(TrafficReading(f"D{o}", SEGMENT, T0 + o, 10, 30.0, 40.0, 0.2)), int((T0 + 60) * 1000))
               for o in range(40)]
    flaky, alone = FlakyState(failing={2, 3}), MemoryState()  # the second batch's commit, and its first redo
    p, one = HarnessProcessor(TrafficStage, flaky, reference, S), HarnessProcessor(TrafficStage, alone, reference, S)

    async def go() -> None:
        for lo in range(0, 40, 10):
            await p.process(RecordBatch(TP(topic, partition), records[lo : lo + 10]))
        await p.land()
        await one.process(RecordBatch(TP(topic, partition), records))
        await one.land()

    asyncio.run(go())
    assert flaky.calls > 4  # the failed commits were retried
    assert without_commits(flaky.data) == without_commits(alone.data)
    assert int(flaky.data[next(k for k in flaky.data if k.endswith(":offset"))]) == 39
    (window,) = (orjson.loads(v) for k, h in flaky.data.items() if k.endswith(":open") for v in h.values())
    assert window[0] == 400  # vehicles: ten from each of the forty
    sent = {value for sends in p.sends.values() for _, _, value, _ in sends}
    assert sent == {value for sends in one.sends.values() for _, _, value, _ in sends}


def test_an_oversized_event_becomes_a_bounded_dead_letter_and_the_stage_goes_on():
    """A megabyte in a field, or a megabyte that is not JSON, is dead-lettered with the start of
    its bytes, their length and digest, and a short reason; the readings around it apply."""
    good = readings(4)
    huge_field = orjson.dumps({**to_dict(good[0][2]), "sensor_id": "x" * 1_000_000})
    huge_noise = b"\xff" * 1_000_000
    events = [good[0], ("traffic_readings", SEGMENT, huge_field), good[1],
              ("traffic_readings", SEGMENT, huge_noise), *good[2:]]
    out = run_stage(TrafficStage, events, city=CITY, settings=S, broker_time=T0 + 3600)
    letters = [v for _, v in out.sent("dead_letters")]
    assert [(d["offset"], d["raw_bytes"], d["raw_encoding"]) for d in letters] == [
        (1, len(huge_field), "utf-8"), (3, len(huge_noise), "base64")]
    assert [d["raw_sha256"] for d in letters] == [hashlib.sha256(huge_field).hexdigest(),
                                                  hashlib.sha256(huge_noise).hexdigest()]
    assert all(len(d["raw"]) <= 2_000 and len(orjson.dumps(d)) < 4_000 for d in letters)
    assert letters[0]["reason"] == "TrafficReading.sensor_id: 1,000,000 characters, more than the 1,000 allowed"
    applied = {k: int(v) for k, v in out.state.items() if k.endswith(":offset")}
    assert list(applied.values()) == [5]


def test_a_record_too_large_for_kafka_goes_as_a_dead_letter_instead():
    processor = HarnessProcessor(TrafficStage, MemoryState(), FixedReference(S, CITY), S)
    record = (topics.alerts, b"k", b"x" * 2_000_000, None)
    topic, key, value, _ = processor._sendable(record)
    letter = orjson.loads(value)
    assert topic is topics.dead_letters and key == topics.alerts.get_topic_name().encode()
    assert letter["raw_bytes"] == 2_000_000 and len(value) < 4_000
    assert letter["reason"].startswith("a record of 2,000,000 bytes for ")
    assert processor._sendable((topics.alerts, b"k", b"{}", None)) == (topics.alerts, b"k", b"{}", None)


def test_an_event_keyed_otherwise_than_by_its_own_id_is_sent_again_under_it_not_applied():
    """A null key, or another segment's, would apply a reading beside the state of whatever
    partition it landed on: it goes back to its topic under its own id, untouched."""
    good = readings(4)
    other = sorted(CITY.segments)[1]
    (_, _, stray) = good[2]
    nowhere = dataclasses.replace(stray, segment_id="S404")  # re-keying cannot help an id nobody knows
    events = [*good[:2], ("traffic_readings", None, stray), ("traffic_readings", other, stray),
              ("traffic_readings", SEGMENT, nowhere), good[3]]
    out = run_stage(TrafficStage, events, city=CITY, settings=S, broker_time=T0 + 3600)
    assert out.sent("traffic_readings") == [(SEGMENT, to_dict(stray))] * 2
    assert [d["reason"] for _, d in out.sent("dead_letters")] == ["unknown segment_id 'S404': not in the segments reference"]
    assert out.sent("late_events") == []
    without = run_stage(TrafficStage, [*good[:2], good[3]], city=CITY, settings=S, broker_time=T0 + 3600)
    city = lambda state: {k: v for k, v in state.items() if ":offset" not in k and not k.endswith(":commits")}  # noqa: E731
    assert city(out.state) == city(without.state)


class BrittleStage(TrafficStage):
    """The traffic stage with a bug: its rules raise on one detector's readings."""

    def keys(self, r):
        if r.sensor_id == "D-BUG":
            raise KeyError("a bug")
        return super().keys(r)


def test_an_event_the_rules_fail_on_is_dead_lettered_and_the_partition_goes_on(caplog):
    """A failure that would fail again is not retried for ever: the event goes to the dead letters
    with the error, at once, and the batch around it applies as it would without it."""
    good = readings(6)
    bug = ("traffic_readings", SEGMENT, TrafficReading("D-BUG", SEGMENT, T0 + 45, 10, 30.0, 40.0, 0.2))
    out = run_stage(BrittleStage, [*good[:3], bug, *good[3:]], city=CITY, settings=S, broker_time=T0 + 3600)
    assert "retrying in" not in caplog.text  # redone at once, not after a back-off
    (letter,) = [v for _, v in out.sent("dead_letters")]
    assert letter["offset"] == 3 and letter["reason"] == "the traffic stage failed on this event: KeyError: 'a bug'"
    without = run_stage(TrafficStage, good, city=CITY, settings=S, broker_time=T0 + 3600)
    assert {k: v for k, v in out.state.items() if not k.endswith((":offset", ":commits"))} == {
        k: v for k, v in without.state.items() if not k.endswith((":offset", ":commits"))}
    assert [v for _, v in out.sent("alerts")] == [v for _, v in without.sent("alerts")]


class Kafka:
    """What the consumer would say of the source topics: where each partition ends, or nothing."""

    def __init__(self):
        self.end: dict[tuple[str, int], int] | Exception = ConnectionError("broker unreachable")

    async def earliest(self, topic, partition):
        return 0

    async def reread(self, topic, partition, offset):
        raise AssertionError("nothing was lost")

    async def ends(self, partitions):
        if isinstance(self.end, Exception):
            raise self.end
        return self.end


def test_quiet_windows_close_only_when_kafka_says_nothing_is_left_to_read(caplog):
    """A consumer cut off from its broker, or one with records waiting, is not silence."""
    kafka, store = Kafka(), MemoryState()
    p = HarnessProcessor(TrafficStage, store, FixedReference(S, CITY), S, kafka)
    (partition,) = {q for _, q, *_ in place(readings(1), S, T0)}
    topic = topic_name("traffic_readings", S)
    records = [Record(topic, partition, o, SEGMENT.encode(), encode(r), int((T0 + 3600) * 1000))
               for o, (_, _, r) in enumerate(readings(3))]

    def open_windows() -> int:
        return sum(len(v) for k, v in store.data.items() if k.endswith(":open"))

    async def go() -> list[int]:
        await p.process(RecordBatch(TP(topic, partition), records))
        await p.land()
        p.stages[partition].stage.last_event_wall -= S.idle_close_s  # quiet for long enough
        seen = [open_windows()]
        for end in (ConnectionError("broker unreachable"), {(topic, partition): 4}, {(topic, partition): 3}):
            kafka.end = end
            await p.tick()
            seen.append(open_windows())
        return seen

    # Unreachable: stays open. One record waiting: stays open. Caught up: closes.
    assert asyncio.run(go()) == [2, 2, 2, 0]
    assert caplog.text.count("Kafka does not say what is left to read") == 1


class Truncated(Kafka):
    """A topic whose retention has removed its first records."""

    def __init__(self, earliest: int):
        super().__init__()
        self.first = earliest

    async def earliest(self, topic, partition):
        return self.first


def test_a_state_the_group_had_read_past_refuses_input_kafka_no_longer_keeps():
    """Redis emptied under a group that had read to offset 40, on a topic that now starts at 30:
    the input from 0 to 29 is gone, and the stage says so rather than start again from 30. A new
    state on the same topic (the group never read it) starts where the topic now starts."""
    (partition,) = {q for _, q, *_ in place(readings(1), S, T0)}
    topic = topic_name("traffic_readings", S)
    sources = [Source(topic, partition, 30 + o, SEGMENT.encode(), encode(r), T0 + 3600)
               for o, (_, _, r) in enumerate(readings(5))]

    def apply(read_to: int):
        p = HarnessProcessor(TrafficStage, MemoryState(), FixedReference(S, CITY), S, Truncated(30))
        p.read_to[topic, partition] = read_to
        return asyncio.run(p._apply(partition, topic, Sources.of(sources)))

    with pytest.raises(RuntimeError,
                       match=r"applied up to offset -1, but Kafka keeps only from offset 30: the input it needs is gone"):
        apply(read_to=40)
    assert apply(read_to=0).batch.offsets["offset"] == 34


def test_where_assigned_partitions_resume_is_asked_again_whatever_the_redis_client_raises(monkeypatch):
    from streams import runtime

    calls = []

    async def flaky(assigned, read):
        calls.append(1)
        if len(calls) == 1:  # as the cluster client failed with a master down, mid-rebalance
            raise AttributeError("'NoneType' object has no attribute 'writelines'")
        return {TP("t", 0): 5}

    monkeypatch.setattr(runtime, "_applied_positions", flaky)
    assert asyncio.run(runtime.applied_positions({TP("t", 0)}, {})) == {TP("t", 0): 5}
    assert len(calls) == 2
