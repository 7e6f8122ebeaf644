"""A scripted storm at a monitored point on the real broker -> exactly the expected CAP messages."""

from __future__ import annotations

import pytest
from capparselib.parsers import CAPParser
from lxml import etree

from schemas.contract import parse_time
from schemas.events import WaterDepthReading
from schemas.reference import WaterloggingPoint, Zone
from tests.unit.test_cap import XSD

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T16:00:00Z")
ZONE = Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)])
P1 = WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65, "underpass")
P2 = WaterloggingPoint("P2", "Nongye Rd dip", "Z1", None, 34.76, 113.66, "road_dip")

# Water rises past watch, warning and closure, hovers, then drains; P2's sensor fails, recovers
# and falls silent.
P1_DEPTHS = [2, 8, 16, 21, 26, 28, 27.5, 26, 28, 24, 22, 18, 12, 8, 5, 4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
P2_DEPTHS = [1, 1, 2, -40, -40, 3]


def storm() -> list[tuple[str, str, WaterDepthReading]]:
    items = [("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 60 * i, d)) for i, d in enumerate(P1_DEPTHS)]
    items += [("water_depths", "P2", WaterDepthReading("W-P2", "P2", T0 + 60 * i, d)) for i, d in enumerate(P2_DEPTHS)]
    return items


def test_a_storm_gives_alert_updates_cancel_and_sensor_fault_messages_and_nothing_else(city_run):
    run = city_run(partitions=1)  # silence is judged against the points that share a partition
    run.publish([("zones", "Z1", ZONE), ("points", "P1", P1), ("points", "P2", P2)])
    run.start_worker()
    run.publish(storm())
    run.wait_quiet(stages=(("waterlogging", "water_depths"),))

    alerts = run.records("alerts")
    flood = [a for a in alerts if a["info"][0]["event"] == "Road waterlogging"]
    levels = [(a["msg_type"], dict(a["info"][0]["parameters"])["level"]) for a in flood]
    # Up: watch, warning, closure. Down: under 24 cm (closure line 27 - 3) from 16:10; when the
    # 10-minute hold is over the water is under the watch line, so the next message is the all
    # clear, then the Cancel of it.
    assert levels == [("Alert", "watch"), ("Update", "warning"), ("Update", "closure"),
                      ("Update", "cleared"), ("Cancel", "cleared")]
    assert [a["info"][0]["severity"] for a in flood] == ["Minor", "Moderate", "Severe", "Minor", "Minor"]
    assert [a["info"][0]["response_type"] for a in flood][-2:] == ["AllClear", "AllClear"]
    for earlier, later in zip(flood, flood[1:]):
        assert later["references"] == f"{earlier['sender']},{earlier['identifier']},{earlier['sent']}"
    assert len({a["incidents"] for a in flood}) == 1

    faults = [(a["msg_type"], dict(a["info"][0]["parameters"])["sensor_health"]) for a in alerts
              if a["info"][0]["event"] == "Waterlogging sensor fault"]
    # P2 reports until 16:05 while P1 goes on: from 16:20 it is stale, not dry.
    assert faults == [("Alert", "faulty"), ("Update", "ok"), ("Cancel", "ok"), ("Alert", "stale")]
    assert [a["sent"] for a in alerts if a["info"][0]["event"] == "Waterlogging sensor fault"][-1] == "2026-07-20T16:20:00-00:00"
    # Rising 26 cm in five minutes, the water is forecast to reach the severe line; it never does,
    # and while the point's closure alert stands the forecast's end is no all clear.
    ahead = [(a["msg_type"], dict(a["info"][0]["parameters"]).get("outcome"), a["info"][0]["response_type"])
             for a in alerts if a["info"][0]["event"] == "Road waterlogging forecast"]
    assert ahead == [("Alert", None, "Prepare"), ("Update", None, "Prepare"),
                     ("Update", "not_reached_yet_flooded", "None"), ("Cancel", "not_reached_yet_flooded", "None")]
    assert len(alerts) == 13
    assert {a["scope"] for a in alerts if a["info"][0]["event"] == "Waterlogging sensor fault"} == {"Restricted"}

    for doc in run.raw_records("alerts_cap"):
        assert XSD.validate(etree.fromstring(doc)), XSD.error_log
        assert CAPParser(doc.decode()).as_dict()[0]["cap_sender"] == "citybrain"

    points = run.merged("waterlogging", "points")
    assert points["P1"]["depth_cm"] == 2 and points["P1"]["alert_level"] is None
    assert points["P2"]["sensor_health"] == "stale"

    # The worker is killed and a new one replays the same storm: nothing new is opened or sent.
    run.kill_worker(run.workers[0])
    run.start_worker()
    run.publish(storm())
    run.wait_quiet(stages=(("waterlogging", "water_depths"),))
    assert run.records("alerts") == alerts


def test_a_point_at_closure_depth_closes_its_road_and_reopens_it_when_the_water_clears(city_run):
    from schemas.events import TrafficReading
    from schemas.reference import Segment

    run = city_run()
    s1 = Segment("S1", "Jingguang Rd", "Z1", "arterial", 1.0, 50.0, 2)
    s2 = Segment("S2", "Nongye Rd", "Z1", "arterial", 1.0, 50.0, 2)
    run.publish([("zones", "Z1", ZONE), ("segments", "S1", s1), ("segments", "S2", s2), ("points", "P1", P1)])
    run.start_worker()
    settled = (("waterlogging", "water_depths"), ("traffic", "closures", "offset.closures"), ("traffic", "traffic_readings"))
    depths = [("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 60 * i, d)) for i, d in enumerate(P1_DEPTHS)]

    # The water rises to 28 cm at 16:05: S1 closes. Then ten minutes of crawling traffic on both roads.
    run.publish(depths[:7])
    run.wait_quiet(stages=settled[:2])
    run.publish([("traffic_readings", seg.segment_id, TrafficReading(f"D-{seg.segment_id}", seg.segment_id,
                                                                      T0 + 30 * k, 4, 30.0, 12.0, 0.6))
                 for k in range(1, 21) for seg in (s1, s2)])
    run.wait_quiet(stages=settled)
    assert run.merged("traffic", "segments")["S1"]["closed"] is True
    assert run.merged("traffic", "segments")["S2"]["closed"] is False
    ranking = [m.decode() for key, v in run.state().items() if key.endswith(":ranking") and key.startswith("{traffic.")
               for m, _ in v]
    assert "S1" not in ranking and "S2" in ranking
    congested = {dict(a["info"][0]["parameters"])["segment_id"] for a in run.records("alerts")
                 if a["info"][0]["event"] == "Road congestion"}
    assert congested == {"S2"}  # a closed road is closed, not congested

    # The water drains: the closure is cancelled with the waterlogging alert.
    run.publish(depths[7:])
    run.wait_quiet(stages=settled)
    closures = [a for a in run.records("alerts") if a["info"][0]["event"] == "Road closure"]
    assert [(a["msg_type"], dict(a["info"][0]["parameters"])["segment_id"]) for a in closures] == [
        ("Alert", "S1"), ("Update", "S1"), ("Cancel", "S1")]
    assert closures[0]["sent"] == "2026-07-20T16:05:00-00:00"
    assert closures[1]["references"] == f"{closures[0]['sender']},{closures[0]['identifier']},{closures[0]['sent']}"
    assert run.merged("traffic", "closed")["S1"]["points"] == {}
    for doc in run.raw_records("alerts_cap"):
        assert XSD.validate(etree.fromstring(doc)), XSD.error_log


def test_residents_reports_corroborate_a_point_and_a_cluster_raises_a_likely_alert(city_run):
    from schemas.events import CitizenFloodReport

    run = city_run()
    run.publish([("zones", "Z1", ZONE), ("points", "P1", P1)])
    run.start_worker()
    settled = (("waterlogging", "water_depths"), ("waterlogging", "point_reports", "offset.point_reports"),
               ("reports", "flood_reports"), ("report_cells", "report_cells"))
    run.publish([("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0, 22.0))])
    run.wait_quiet(stages=settled)
    reports = [
        # 50 m from P1: corroborates it.
        CitizenFloodReport("R1", T0 + 120, 34.75045, 113.65, 25.0, "13800000001", "water at the underpass"),
        # Three reports 3 km away, where nothing is monitored, within 20 minutes.
        *(CitizenFloodReport(f"R{i}", T0 + 300 * i, 34.78, 113.68 + 0.0005 * i, None, None, None) for i in (2, 3, 4)),
    ]
    run.publish([("flood_reports", r.report_id, r) for r in reports])
    run.wait_quiet(stages=settled)

    alerts = run.records("alerts")
    point = [(a["msg_type"], a["info"][0]["certainty"]) for a in alerts if a["info"][0]["event"] == "Road waterlogging"]
    assert point == [("Alert", "Possible"), ("Update", "Observed")]
    cluster = [(a["msg_type"], a["info"][0]["certainty"]) for a in alerts if a["info"][0]["event"] == "Reported waterlogging"]
    assert cluster == [("Alert", "Likely")]
    # The reporter's phone number went no further than the report topic.
    assert b"13800000001" not in b"".join(run.raw_records("alerts") + run.raw_records("point_reports"))
    assert "13800000001" not in repr(run.state())
