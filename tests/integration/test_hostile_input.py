"""Input a careless or broken feed sends, on the real stack: copies of readings under a null key or
another segment's key, and one sensor whose clock runs a day ahead. The city ends as the
uninterrupted run of the clean input ends; each hostile event is accounted for."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from schemas.contract import encode
from tests.integration.test_restart import comparable, unique

pytestmark = pytest.mark.integration

COPIES = 150  # of each kind


def city(state: dict) -> dict:
    """What the city sees: no offsets (the hostile run's topics hold more records), and no note of
    the wild clock the partition remembers beside its watermark."""
    return {k: without_wild_clocks(value) if k.endswith(":meta") else value
            for k, value in comparable(state).items() if not k.endswith(":offset")}


def without_wild_clocks(meta: dict) -> dict:
    skew = meta.get(b"skew")
    return meta if skew is None else {**meta, b"skew": {k: v for k, v in skew.items() if k != "ahead"}}


def test_mis_keyed_copies_and_a_clock_a_day_ahead_leave_the_city_as_it_was(city_run, rush_hour, steady):
    steady_run, steady_state = steady
    reference, events = rush_hour
    rng = random.Random(5)
    readings = [i for i, (role, _, _) in enumerate(events) if role == "traffic_readings"]
    segments = sorted({events[i][1] for i in readings})
    hostile: dict[int, list] = {}
    copies = set()
    for n, i in enumerate(rng.sample(readings, 2 * COPIES)):
        role, key, reading = events[i]
        wrong = None if n < COPIES else rng.choice([s for s in segments if s != key])
        hostile.setdefault(i + rng.randint(1, 200), []).append((role, wrong, reading))  # soon after the original
        copies.add(encode(reading))
    role, key, reading = events[readings[len(readings) // 2]]
    wild = replace(reading, sensor_id="D-WILD", event_time=reading.event_time + 86_400)
    hostile.setdefault(readings[len(readings) // 2], []).append((role, key, wild))
    fed = [item for i, event in enumerate(events) for item in (event, *hostile.get(i, ()))]

    run = city_run()
    run.publish(reference)
    run.start_worker()
    run.publish(fed)
    state = run.wait_quiet(timeout=300)

    (dead,) = run.records("dead_letters")
    assert dead["raw"] == encode(wild).decode() and dead["reason"].endswith("a clock that runs wrong")
    # A copy sent back under its own id meets its original's window open and counts once, or
    # finds it closed and is late; none is applied beside another segment's state.
    assert all(late["raw"].encode() in copies for late in run.records("late_events"))
    (log,) = run.logs()
    assert log.count("was keyed null, not by its own id") == COPIES
    assert log.count("was keyed otherwise, not by its own id") == COPIES
    # Each was sent back to the topic under its own id: the topic holds the feed and the resends.
    assert sum(run.end_offsets("traffic_readings").values()) == sum(r == "traffic_readings" for r, *_ in fed) + 2 * COPIES
    assert city(state) == city(steady_state)
    by_id = lambda a: a["identifier"]  # noqa: E731
    assert unique(run.records("alerts"), by_id) == unique(steady_run.records("alerts"), by_id)
    plans = lambda r: {(p["intersection_id"], p["window_start"]): p for p in r.records("signal_plans")}  # noqa: E731
    assert plans(run) == plans(steady_run)
