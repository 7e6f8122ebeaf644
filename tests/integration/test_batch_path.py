"""The batch path on the real broker: a consumer group rebalancing under a SIGKILL commits
every offset once, and a Redis that lost its newest writes is refilled from Kafka."""

from __future__ import annotations

import signal
import time
import urllib.request

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from streams.clients import kafka_admin, kafka_auth
from streams.state import partition_key
from streams.topics import partitions_of, topic_name
from tests.integration.test_restart import assert_same_city, comparable, unique

pytestmark = pytest.mark.integration


def committed(run, role: str) -> dict[int, int | None]:
    """The consumer group's committed offsets on a topic."""
    consumer = KafkaConsumer(bootstrap_servers=run.settings.kafka_bootstrap, group_id=run.settings.app_id,
                             **kafka_auth(run.settings), enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic_name(role, run.settings), p))
                for p in range(partitions_of(role, run.settings))}
    finally:
        consumer.close()


def readings_applied(run) -> int:
    return sum(o + 1 for o in run.applied_offsets("traffic", 4).values())


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def fed_city(city_run, rush_hour, workers: int = 1, **overrides):
    """A run with its map, its workers ready, and the rush hour arriving as a live feed:
    (run, feeding thread, readings in the feed)."""
    reference, events = rush_hour
    run = city_run(**overrides)
    run.publish(reference)
    for _ in range(workers):
        run.start_worker()
    for i in range(workers):
        wait_for(lambda i=i: "Worker ready" in run.logs()[i], timeout=120)
    feed = run.publish_in_background(events, chunks=60, pause_s=0.15)
    return run, feed, sum(1 for role, *_ in events if role == "traffic_readings")


def test_three_workers_one_killed_and_one_joining_late_commit_every_offset_once(city_run, rush_hour, steady):
    """Partitions move mid-feed when one of two workers is SIGKILLed, and again when a third joins
    after the input is applied, its windows still open: the newcomer loads them as they are
    assigned and closes them on its timer, with no event to wake them."""
    steady_run, steady_state = steady
    run, feed, total = fed_city(city_run, rush_hour, workers=2, idle_close_s=30)
    wait_for(lambda: readings_applied(run) >= 0.5 * total)
    run.kill_worker(run.workers[1])  # its partitions move to the survivor after the session times out
    assert readings_applied(run) < total, "the kill must land in the middle of the feed"
    feed.join()
    wait_for(lambda: readings_applied(run) == total, timeout=180)
    run.start_worker()
    wait_for(lambda: "Worker ready" in run.logs()[2], timeout=120)
    still_open = {p for p in range(4) if run.redis.hlen(f"{partition_key(run.settings.key_prefix, 'traffic', p)}:open")}
    joiner = traffic_partitions(run, member_of(run.logs()[2]))
    assert still_open & joiner, f"the late joiner must hold windows still open: {still_open} open, it holds {joiner}"
    state = run.wait_quiet(timeout=300)

    assert_same_city(run, state, steady_run, steady_state)
    # Every partition is committed to its end: no gap, nothing left behind.
    ends = run.end_offsets("traffic_readings")
    wait_for(lambda: committed(run, "traffic_readings") == ends, timeout=60)


def member_of(log: str) -> str:
    """A worker's id in the consumer group, from its log's latest join."""
    return log.rsplit(" with member_id ", 1)[1].split()[0]


def traffic_partitions(run, member: str) -> set[int]:
    """The traffic partitions the group has assigned to a member."""
    topic = topic_name("traffic_readings", run.settings)
    admin = kafka_admin(run.settings)
    try:
        group = admin.describe_groups([run.settings.app_id])[run.settings.app_id]
    finally:
        admin.close()
    (found,) = [m for m in group["members"] if m["member_id"] == member]
    return {p for a in found["member_assignment"]["assigned_partitions"] if a["topic"] == topic for p in a["partitions"]}


def test_a_redis_rolled_back_behind_the_committed_offsets_is_refilled_from_kafka(city_run, rush_hour, steady):
    steady_run, steady_state = steady
    steady_alerts = unique(steady_run.records("alerts"), lambda a: a["identifier"])
    run, feed, total = fed_city(city_run, rush_hour)
    (worker,) = run.workers
    wait_for(lambda: readings_applied(run) >= 0.4 * total)
    # A snapshot of the traffic stage's state, taken while the worker is frozen (so it is one
    # consistent moment), as a Redis restarted from an old RDB file would bring back.
    worker.send_signal(signal.SIGSTOP)
    snapshot = dump_stage(run, "traffic")
    at_snapshot = readings_applied(run)
    worker.send_signal(signal.SIGCONT)
    feed.join()
    run.wait_quiet(timeout=300)
    worker.terminate()  # a clean stop commits the group's offsets to the end
    worker.wait(30)
    run.workers.remove(worker)
    assert sum(o or 0 for o in committed(run, "traffic_readings").values()) > at_snapshot

    restore_stage(run, "traffic", snapshot)
    assert readings_applied(run) == at_snapshot < total  # the state is now behind the group
    run.start_worker()
    state = run.wait_quiet(timeout=300)

    traffic = lambda s: {k: v for k, v in comparable(s).items() if k.startswith("{traffic.")}  # noqa: E731
    assert traffic(state) == traffic(steady_state)
    assert unique(run.records("alerts"), lambda a: a["identifier"]) == steady_alerts


def stage_keys(run, stage: str) -> list[bytes]:
    prefix = run.settings.key_prefix
    return [k for p in range(4) for k in run.redis.scan_iter(match=f"{partition_key(prefix, stage, p)}:*", count=1000)]


def dump_stage(run, stage: str) -> dict[bytes, bytes]:
    return {key: run.redis.dump(key) for key in stage_keys(run, stage)}


def restore_stage(run, stage: str, snapshot: dict[bytes, bytes]) -> None:
    client: redis.Redis = run.redis
    for key in stage_keys(run, stage):
        client.delete(key)
    for key, value in snapshot.items():
        client.restore(key, 0, value)


def test_a_state_emptied_where_kafka_no_longer_keeps_its_input_stops_its_partitions_saying_so(city_run, rush_hour):
    """The rush hour applied and committed; Kafka then drops the first half of each traffic
    partition (retention), and Redis loses the traffic stage's state. A worker must not start
    that state again from what is left, as if the first half had never been."""
    run, feed, total = fed_city(city_run, rush_hour)
    feed.join()
    run.wait_quiet(timeout=300)
    (worker,) = run.workers
    worker.terminate()  # a clean stop commits the group's offsets to the end
    worker.wait(30)
    run.workers.remove(worker)
    ends = run.end_offsets("traffic_readings")
    admin = kafka_admin(run.settings)
    try:
        topic = topic_name("traffic_readings", run.settings)
        admin.delete_records({TopicPartition(topic, p): end // 2 for p, end in ends.items()})
    finally:
        admin.close()
    for key in stage_keys(run, "traffic"):
        run.redis.delete(key)

    run.start_worker()
    wait_for(lambda: run.logs()[-1].count("the input it needs is gone") >= 2, timeout=120)  # and again
    log = run.logs()[-1]
    assert "Redis lost the writes between; reading them again from Kafka" in log  # seen at assignment
    said = [p for p, end in ends.items() if f"the state of {topic}[{p}] has applied up to offset -1, but Kafka "
            f"keeps only from offset {end // 2}: the input it needs is gone" in log]
    assert said, log[-3000:]
    assert readings_applied(run) == 0  # nothing applied on top of the hole
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{run.web_port}/metrics", timeout=10).read().decode()
    assert 'citybrain_input_gone_total{stage="traffic"}' in metrics
