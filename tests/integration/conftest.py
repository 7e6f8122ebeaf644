"""The real stack for integration tests, and a `CityRun` per test: its own topics, Redis keys,
consumer group and worker processes, so tests never see each other's data."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas.contract import encode
from streams.admin import ensure_topics
from streams.clients import kafka_admin, kafka_auth, sync_redis
from streams.settings import Settings, from_env
from streams.state import partition_key
from streams.tools.feed import Publisher
from streams.topics import SPECS, partitions_of, topic_name

REPO = Path(__file__).resolve().parents[2]
CITYBRAIN = Path(sys.executable).parent / "citybrain"


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Kafka and Redis, started by the project's own script (a no-op when already up)."""
    subprocess.run([str(REPO / "ops" / "stack.sh"), "up"], check=True, env={**os.environ, "CITYBRAIN_PYTHON": sys.executable})
    return from_env()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before: a worker given one binds it only seconds later,
    when the kernel may already have offered it again."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


async def send_all(pub: Publisher, items: list[tuple[str, str, Any]]) -> None:
    """(topic role, key, record or raw bytes), in order."""
    for role, key, value in items:
        await pub.send_raw(role, key, value if isinstance(value, bytes) else encode(value))


def errors_in(log: str) -> str:
    """The log's ERROR and CRITICAL records with their tracebacks."""
    records = re.split(r"\n(?=\[\d{4}-\d\d-\d\d )", log)
    return "\n".join(r for r in records if "] [ERROR] " in r or "] [CRITICAL] " in r)


class CityRun:
    """One isolated city on the shared broker and Redis."""

    def __init__(self, base: Settings, tmp: Path, **overrides: Any):
        name = f"it{uuid.uuid4().hex[:10]}"
        self.env = {
            **os.environ,
            "CITYBRAIN_TOPIC_PREFIX": f"{name}.",
            "CITYBRAIN_APP_ID": name,
            "CITYBRAIN_KEY_PREFIX": name,
            "CITYBRAIN_IDLE_CLOSE_S": "2",
            "CITYBRAIN_SESSION_TIMEOUT_S": "6",
            "CITYBRAIN_PRIVACY_KEYS": f"k1:{uuid.uuid4().hex}",
            **{f"CITYBRAIN_{k.upper()}": str(v) for k, v in overrides.items()},
        }
        self.settings = from_env(self.env)
        self.tmp = tmp
        self.redis = sync_redis(self.settings)
        self.workers: list[subprocess.Popen] = []  # running, or killed and still counted
        self.started = 0
        ensure_topics(self.settings)

    # -- workers
    def start_worker(self) -> subprocess.Popen:
        log = open(self.tmp / f"worker-{self.started}.log", "wb")
        self.started += 1
        self.web_port = free_port()  # the latest worker's: its /metrics
        proc = subprocess.Popen(
            [str(CITYBRAIN), "worker", "-l", "info", "--web-port", str(self.web_port)],
            env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """Stop the workers and remove the run's topics and keys: a suite makes thousands of
        partitions, more than a small broker keeps files open for."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        admin = kafka_admin(self.settings)
        try:
            existing = set(admin.list_topics())
            mine = [topic_name(role, self.settings) for role in SPECS] + [f"{self.settings.app_id}-__assignor-__leader"]
            admin.delete_topics([t for t in mine if t in existing])
        finally:
            admin.close()
        for key in self.redis.scan_iter(match=f"{self.settings.key_prefix}:*", count=1000):
            self.redis.unlink(key)
        self.redis.close()

    def worker_log(self) -> str:
        """Every worker's errors and the end of its log, for a failure's message."""
        return "\n".join(f"--- worker {i}: errors\n{errors_in(log)[-6000:]}\n--- worker {i}: end\n{log[-4000:]}"
                         for i, log in enumerate(self.logs()))

    def logs(self) -> list[str]:
        """Every worker's whole log."""
        return [(self.tmp / f"worker-{i}.log").read_text(errors="replace") for i in range(self.started)]

    # -- publishing
    def publish(self, items: list[tuple[str, str, Any]]) -> None:
        """(topic role, key, record or raw bytes), in order."""

        async def go() -> None:
            async with Publisher(self.settings) as pub:
                await send_all(pub, items)

        asyncio.run(go())

    def publish_in_background(self, items: list[tuple[str, str, Any]], chunks: int = 40,
                              pause_s: float = 0.1) -> threading.Thread:
        """Publish in chunks with pauses, from a thread: a worker meets the items as a live feed,
        batch after batch, so a test can kill it in the middle."""

        async def go() -> None:
            size = max(1, len(items) // chunks)
            async with Publisher(self.settings) as pub:
                for i in range(0, len(items), size):
                    await send_all(pub, items[i : i + size])
                    await pub.flush()
                    await asyncio.sleep(pause_s)

        thread = threading.Thread(target=asyncio.run, args=(go(),), daemon=True)
        thread.start()
        return thread

    # -- reading what came out
    def records(self, role: str) -> list[dict]:
        """Every JSON record on a topic, in partition then offset order."""
        return [orjson.loads(value) for value in self.raw_records(role)]

    def raw_records(self, role: str) -> list[bytes]:
        """Every record's bytes on a topic, in partition then offset order."""
        consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False,
                                 **kafka_auth(self.settings))
        try:
            tps = [TopicPartition(topic_name(role, self.settings), p) for p in range(partitions_of(role, self.settings))]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            out: list[tuple[int, int, bytes]] = []
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                for tp, msgs in consumer.poll(timeout_ms=1000).items():
                    out += [(tp.partition, m.offset, m.value) for m in msgs]
            return [r for _, _, r in sorted(out, key=lambda x: x[:2])]
        finally:
            consumer.close()

    def end_offsets(self, role: str) -> dict[int, int]:
        consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, **kafka_auth(self.settings))
        try:
            tps = [TopicPartition(topic_name(role, self.settings), p) for p in range(partitions_of(role, self.settings))]
            return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()

    def applied_offsets(self, stage: str, partitions: int, name: str = "offset") -> dict[int, int]:
        with self.redis.pipeline(transaction=False) as pipe:  # keys of several slots: no MGET on a cluster
            for p in range(partitions):
                pipe.get(f"{partition_key(self.settings.key_prefix, stage, p)}:{name}")
            return {p: int(v) if v is not None else -1 for p, v in enumerate(pipe.execute())}

    def merged(self, stage: str, name: str) -> dict[str, Any]:
        """One hash of a stage, merged over its partitions, with decoded JSON values."""
        out = {}
        for key, value in self.state().items():
            if key.startswith(f"{{{stage}.") and key.endswith(f"}}:{name}"):
                out.update({k.decode(): orjson.loads(v) for k, v in value.items()})
        return out

    def state(self) -> dict[str, Any]:
        """Every Redis key of this run (prefix removed) with its value."""
        out = {}
        prefix = self.settings.key_prefix
        for key in self.redis.scan_iter(match=f"{prefix}:*", count=1000):
            kind = self.redis.type(key)
            name = key.decode()[len(prefix) + 1 :]
            if kind == b"string":
                out[name] = self.redis.get(key)
            elif kind == b"hash":
                out[name] = self.redis.hgetall(key)
            elif kind == b"zset":
                out[name] = self.redis.zrange(key, 0, -1, withscores=True)
        return out

    def wait_quiet(self, timeout: float = 180.0, stages: tuple[tuple[str, str], ...] = (
        ("traffic", "traffic_readings"), ("city", "city_parts"), ("signals", "approach_flows"))) -> dict[str, Any]:
        """Wait until every stage has applied its topic to the end and the state stops changing."""
        deadline = time.monotonic() + timeout
        last, stable_since = None, None
        while time.monotonic() < deadline:
            for proc in self.workers:
                if proc.poll() not in (None, -signal.SIGKILL):
                    raise AssertionError(f"worker exited with {proc.returncode}:\n{self.worker_log()}")
            caught_up = all(
                self.applied_offsets(stage, partitions_of(role, self.settings), *name)[p] >= end - 1
                for stage, role, *name in stages
                for p, end in self.end_offsets(role).items()
                if end > 0
            )
            now = self.state() if caught_up else None
            if caught_up and now == last:
                if time.monotonic() - stable_since >= 2 * self.settings.idle_close_s + 2:
                    return now
            else:
                last, stable_since = now, time.monotonic()
            time.sleep(0.5)
        raise AssertionError(f"city did not settle within {timeout} s:\n{self.worker_log()}")


@pytest.fixture
def city_run(stack, tmp_path):
    runs: list[CityRun] = []

    def make(**overrides: Any) -> CityRun:
        folder = tmp_path / f"run{len(runs)}"
        folder.mkdir()
        run = CityRun(stack, folder, **overrides)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.stop()


@pytest.fixture(scope="session")
def rush_hour():
    """The rush-hour input of the fault tests: (reference records, events)."""
    from tests.integration.test_restart import rush_hour_items

    return rush_hour_items()


@pytest.fixture(scope="session")
def steady(stack, tmp_path_factory, rush_hour):
    """The rush hour through one worker that nothing interrupts: (the run, the state it ends with),
    what every faulted run of the same input must end with."""
    reference, events = rush_hour
    run = CityRun(stack, tmp_path_factory.mktemp("steady"))
    run.publish(reference)
    run.start_worker()
    run.publish(events)
    state = run.wait_quiet(timeout=300)
    yield run, state
    run.stop()
