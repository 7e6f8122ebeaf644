"""A console view of the city brain: alerts and signal plans as they happen, the city's state
now and then, and a summary at the end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio.cluster import RedisCluster

from schemas.contract import iso
from streams.clients import async_redis, kafka_auth
from streams.runtime import declared_stage
from streams.settings import Settings
from streams.table import Ranking, Value, declared
from streams.topics import partitions_of, topic_name

WATCHED = ("alerts", "signal_plans", "notices", "bills", "dead_letters", "late_events")
SHOWN_PER_KIND = 3  # plans, notices and bills come in numbers: a few of each kind are shown, all counted


async def city_snapshot(client: aioredis.Redis | RedisCluster, settings: Settings, top: int = 5) -> tuple[Any, list]:
    """The latest city index and the most congested segments of that window, read through the
    city stage's declarations (its one partition)."""
    city = declared_stage("city")
    index = await declared(city, Value)["latest"].fetch(client, settings.key_prefix, city.name, 0)
    ranking = await declared(city, Ranking)["ranking"].fetch(client, settings.key_prefix, city.name, 0, top)
    return index, ranking


def describe(role: str, record: dict) -> str:
    if role == "alerts":
        info = next((i for i in record["info"] if i["language"] == "en-US"), record["info"][0])
        return f"ALERT {record['msg_type']:<6} {info['severity']:<8} {info['headline']}  [{record['identifier']}]"
    if role == "signal_plans":
        if record["oversaturated"]:
            return f"PLAN  {record['intersection_id']}: oversaturated (Y={record['flow_ratio_total']})"
        greens = ", ".join(f"{p['phase']} {p['green_s']:.0f}s" for p in record["phases"])
        return f"PLAN  {record['intersection_id']}: cycle {record['cycle_s']:.0f}s ({greens}), Y={record['flow_ratio_total']}"
    if role == "notices":
        text = dict(record["text"]).get("en-US", "")
        return f"NOTICE {record['kind']:<12} to {record['to_kind']} {record['to'][:14]}…: {text}"
    if role == "bills":
        return (f"BILL  {record['lot_id']}: {record['duration_s'] / 60:.0f} min, {record['billed_units']} units, "
                f"{record['amount_cny']:.2f} CNY (plate {record['plate_token'][:14]}…)")
    where = f"{record['source_topic']}[{record['partition']}]@{record['offset']}"
    return f"{role.upper().replace('_', ' ')}: {where}: {record['reason']}"


def kind_of(role: str, record: dict) -> str:
    """What the summary counts a record as."""
    if role == "alerts":
        return f"alerts:{record['msg_type']}"
    if role == "notices":
        return f"notices:{record['kind']}"
    return role


async def watch_city(settings: Settings, seconds: float, quiet_after: float, say: Callable[[str], None]) -> Counter:
    """Print what the city brain says until `seconds` pass or it has been quiet for `quiet_after`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **kafka_auth(settings))
    client = async_redis(settings)
    roles = {topic_name(r, settings): r for r in WATCHED}
    seen: Counter = Counter()
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t, r in roles.items() for p in range(partitions_of(r, settings))]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        started = last_news = last_state = time.monotonic()
        shown = None
        while True:
            now = time.monotonic()
            if (seconds and now - started >= seconds) or (quiet_after and now - last_news >= quiet_after):
                break
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    role, record = roles[tp.topic], orjson.loads(m.value)
                    kind = kind_of(role, record)
                    seen[kind] += 1
                    last_news = time.monotonic()
                    if role not in ("signal_plans", "notices", "bills") or seen[kind] <= SHOWN_PER_KIND:
                        say(describe(role, record))
            if time.monotonic() - last_state >= 5:
                last_state = time.monotonic()
                index, ranking = await city_snapshot(client, settings)
                if index and index != shown:
                    shown = index
                    worst = ", ".join(f"{seg} {tpi:.1f}" for seg, tpi in ranking)
                    say(f"CITY  window {iso(index.window_start)}: TPI {index.tpi:.2f} ({index.level}); worst: {worst}")
        index, ranking = await city_snapshot(client, settings)
        say("---- summary ----")
        for kind, count in sorted(seen.items()):
            say(f"{kind:<22} {count}")
        if index:
            say(f"city TPI {index.tpi:.2f} ({index.level}) for window {iso(index.window_start)}, "
                f"{index.segments} segments, {index.vehicle_km:.0f} vehicle-km")
        for seg, tpi in ranking:
            say(f"  most congested: {seg} TPI {tpi:.1f}")
        return seen
    finally:
        await consumer.stop()
        await client.aclose()



