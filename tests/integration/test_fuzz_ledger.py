"""A storm's readings with 10,000 fuzzed events mixed in (traffic, depth and rain), on the real
stack: each one ends where it must (the dead letters, the late events, or counted once as a
resend), found by its exact topic, partition and offset, and the points and gauges end as the
storm alone leaves them."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import fields, replace
from typing import Any

import orjson
import pytest

from agents import evacuation, flood, health, parking, traffic, webhooks  # noqa: F401  declare every stage
from schemas.contract import encode, parse_time, to_dict
from streams.runtime import declared
from streams.settings import Settings
from streams.tools.harness import place
from streams.tools.simulate import Rainstorm, build_city, reference_records
from streams.topics import topic_name
from tests.integration.test_restart import comparable

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T16:00:00Z")
FUZZ = 10_000
INGESTION = ("traffic_readings", "water_depths", "rain_readings")


# Where the city ends is compared for the stages whose input is one topic partition, in the order
# Kafka keeps: depth and rain. Those that join several topics or partitions (a road closed by a
# point's water, a zone's signal from its gauges, a car park closed by its zone) take records in
# an arrival order that two runs need not share, so their outcome is not the fuzz's to judge.
ORDERED_STAGES = ("waterlogging", "rain")
ORDERED_ALERTS = ("Road waterlogging", "Waterlogging sensor fault")


def storm() -> tuple[list, list]:
    city = build_city(seed=7)
    return list(reference_records(city)), [(role, key, rec) for _, role, key, rec in Rainstorm(city, T0).events()
                                           if role in INGESTION]


def broken(role: str, key: str, event: Any, rng: random.Random) -> tuple[str, str, bytes]:
    """One way a feed breaks an event: each goes to the dead letters."""
    payload = to_dict(event)
    named = [f.name for f in fields(event)]
    kind = rng.choice(["not_json", "truncated", "missing", "wrong_type", "bad_time", "oversized", "not_an_object"])
    if kind == "not_json":
        return role, key, bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))) + b"\xff"
    if kind == "truncated":
        return role, key, encode(event)[: -rng.randint(1, 10)]
    if kind == "missing":
        del payload[rng.choice([n for n in named if n != "event_time"][:2] + ["event_time"])]
    elif kind == "wrong_type":
        payload["event_time" if rng.random() < 0.5 else named[0]] = rng.choice([[], {"x": 1}, None, 12.5e300])
    elif kind == "bad_time":
        payload["event_time"] = rng.choice(["yesterday", "2026-07-20T16:00:00", "2026-13-40T99:00:00Z", ""])
    elif kind == "oversized":
        payload[named[0]] = "x" * rng.randint(1_001, 20_000)
    else:
        return role, key, orjson.dumps(list(payload.values()))
    return role, key, orjson.dumps(payload)


def outdated(role: str, key: str, event: Any) -> tuple[str, str, Any] | None:
    """A valid event the state has moved past, sent right after the one it follows: late."""
    if role == "water_depths":
        return role, key, replace(event, event_time=event.event_time - 120)
    if role == "rain_readings":
        return role, key, replace(event, rain_mm=event.rain_mm + 1.5)  # another amount for a time counted
    if role == "traffic_readings":
        return role, key, replace(event, sensor_id=event.sensor_id + "-old", event_time=event.event_time - 3600)
    return None


def fuzzed(events: list, rng: random.Random) -> tuple[list, list[tuple[int, str]]]:
    """The storm with fuzz mixed in, and for each fuzzed item its index in the feed and where it
    must end: "dead", "late" or "repeat"."""
    fed, fate = [], []
    chosen = set(rng.sample([i for i, (role, *_) in enumerate(events) if role in INGESTION], FUZZ))
    for i, item in enumerate(events):
        fed.append(item)
        if i not in chosen:
            continue
        role, key, event = item
        old = outdated(role, key, event)
        draw = rng.random()
        if old is not None and draw < 0.3:
            fed.append(old)
            fate.append((len(fed) - 1, "late"))
        elif role in ("water_depths", "rain_readings", "traffic_readings") and draw < 0.4:
            fed.append(item)  # the sensor sends it again
            fate.append((len(fed) - 1, "repeat"))
        else:
            fed.append(broken(role, key, event, rng))
            fate.append((len(fed) - 1, "dead"))
    return fed, fate


def where(fed: list, s: Settings) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of each item, as the producer places them on fresh topics."""
    next_offset: Counter = Counter()
    out = []
    for role, partition, *_ in place(fed, s, 0.0):
        topic = topic_name(role, s)
        out.append((topic, partition, next_offset[topic, partition]))
        next_offset[topic, partition] += 1
    return out


def every_stage() -> tuple[tuple[str, ...], ...]:
    return (*((c.name, c.source) for c in declared),
            *((c.name, role, f"offset.{role}") for c in declared for role in c.alongside))


def test_ten_thousand_fuzzed_events_each_end_where_they_must_and_change_nothing(city_run):
    reference, events = storm()
    fed, fate = fuzzed(events, random.Random(2026))
    assert len(fate) == FUZZ and min(Counter(f for _, f in fate).values()) > 500

    clean = city_run()
    clean.publish(reference)
    clean.start_worker()
    clean.publish(events)
    clean_state = clean.wait_quiet(timeout=300, stages=every_stage())

    run = city_run()
    run.publish(reference)
    run.start_worker()
    run.publish(fed)
    state = run.wait_quiet(timeout=300, stages=every_stage())

    assert clean.records("dead_letters") == [] and clean.records("late_events") == []
    at = where(fed, run.settings)
    expected = {kind: {at[i] for i, f in fate if f == kind} for kind in ("dead", "late")}
    ended = {kind: {(d["source_topic"], d["partition"], d["offset"]) for d in run.records(role)}
             for kind, role in (("dead", "dead_letters"), ("late", "late_events"))}
    assert ended["dead"] == expected["dead"] and len(run.records("dead_letters")) == len(expected["dead"])
    assert ended["late"] == expected["late"] and len(run.records("late_events")) == len(expected["late"])

    city = lambda s: {k: v for k, v in comparable(s).items()  # noqa: E731
                      if ":offset" not in k and k[1:].split(".")[0] in ORDERED_STAGES}
    assert city(state) == city(clean_state) and len(city(state)) > 10
    alerts = lambda r: {orjson.dumps(a) for a in r.records("alerts") if a["info"][0]["event"] in ORDERED_ALERTS}  # noqa: E731
    assert alerts(run) == alerts(clean) and len(alerts(clean)) > 10
    for role in ("gauge_rain", "closures"):
        assert set(map(orjson.dumps, run.records(role))) == set(map(orjson.dumps, clean.records(role))), role
