"""A worker killed with SIGKILL mid-run and restarted ends where an uninterrupted run ends."""

from __future__ import annotations

import time

import orjson
import pytest

from schemas.contract import parse_time
from streams.tools.simulate import RushHour, build_city, reference_records

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T07:00:00Z")


def rush_hour_items():
    city = build_city(seed=11, zones_per_side=4, segments_per_zone=24)
    scenario = RushHour(city, T0, duration_s=7800.0, interval_s=30.0, seed=11)
    return list(reference_records(city)), [(role, key, rec) for _, role, key, rec in scenario.events()]


def comparable(state: dict) -> dict:
    # Downstream stages read topics that a killed worker may have written twice (same records,
    # more offsets), so their offsets differ by design, as do commit counts; so does the broker's
    # time of the records that moved a watermark, in a run of its own; everything the city sees
    # must not.
    return {
        k: without_record_times(v) if k.endswith(":meta") else v for k, v in state.items()
        if not (k.endswith(":commits") or (k.endswith(":offset") and not k.startswith("{traffic.")))
    }


def without_record_times(meta: dict) -> dict:
    """A stage's meta hash but for the broker's time in its skew record (streams/clock.py)."""
    if b"skew" not in meta:
        return meta
    skew = orjson.loads(meta[b"skew"])
    del skew["moved_at"]
    return {**meta, b"skew": skew}


def unique(records: list[dict], key) -> dict:
    out: dict = {}
    for r in records:
        assert out.setdefault(key(r), r) == r, f"two different records for {key(r)}"
    return out


def assert_same_city(run, state: dict, steady, steady_state: dict) -> None:
    """A run ends where the uninterrupted one ends: no dead or late letters, the same state
    (but for offsets a resend moves), the same alerts and the same signal plans."""
    for r in (steady, run):
        assert r.records("dead_letters") == [] and r.records("late_events") == []
    assert comparable(state) == comparable(steady_state)
    by_id = lambda a: a["identifier"]  # noqa: E731
    steady_alerts = unique(steady.records("alerts"), by_id)
    assert unique(run.records("alerts"), by_id) == steady_alerts and len(steady_alerts) > 0
    plans = lambda r: {(p["intersection_id"], p["window_start"]): p for p in r.records("signal_plans")}  # noqa: E731
    assert plans(run) == plans(steady)


def test_sigkill_mid_run_and_restart_ends_with_the_same_state(city_run, rush_hour, steady):
    reference, events = rush_hour
    assert len(events) > 90_000
    steady, steady_state = steady

    crashed = city_run()
    crashed.publish(reference)
    crashed.publish(events)
    first = crashed.start_worker()
    total = sum(crashed.end_offsets("traffic_readings").values())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = sum(o + 1 for o in crashed.applied_offsets("traffic", 4).values())
        if done >= 0.4 * total:
            break
        time.sleep(0.05)
    crashed.kill_worker(first)
    done_at_kill = sum(o + 1 for o in crashed.applied_offsets("traffic", 4).values())
    assert 0 < done_at_kill < total, "the kill must land in the middle of the run"
    crashed.start_worker()
    crashed_state = crashed.wait_quiet(timeout=300)

    for run in (steady, crashed):
        assert run.records("dead_letters") == [] and run.records("late_events") == []
    assert comparable(crashed_state) == comparable(steady_state)
    assert crashed_state["{traffic.0}:offset"] == steady_state["{traffic.0}:offset"]
    assert sum(len(v) for k, v in steady_state.items() if k.endswith(":open")) == 0
    segments = steady.merged("traffic", "segments")
    assert len(segments) == 384

    # Resent records are the same records: identical ids, nothing new, nothing missing.
    by_id = lambda a: a["identifier"]  # noqa: E731
    steady_alerts, crashed_alerts = unique(steady.records("alerts"), by_id), unique(crashed.records("alerts"), by_id)
    assert crashed_alerts == steady_alerts and len(steady_alerts) > 0
    # A plan may be revised when a late-starting partition's flow comes in: the last one counts.
    steady_plans = {(p["intersection_id"], p["window_start"]): p for p in steady.records("signal_plans")}
    assert {(p["intersection_id"], p["window_start"]): p for p in crashed.records("signal_plans")} == steady_plans
    # Every intersection gets a complete plan for every minute the readings touch (07:00-09:10).
    assert len(steady_plans) == 32 * 131 and all(not p["missing"] for p in steady_plans.values())
