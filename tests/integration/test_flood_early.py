"""Alerts a city can act on early, on the real broker and Redis: a forecast warns before the
closure line is crossed, a sensor spike closes no garage, a sensor whose neighbours are dry is
doubted, and a dead rain gauge lets its zone's signal step down."""

from __future__ import annotations

import pytest

from schemas.contract import parse_time
from schemas.events import RainGaugeReading, WaterDepthReading
from schemas.reference import Lot, RainGauge, WaterloggingPoint, Zone

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T06:00:00Z")
ZONE = Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)])
POINT = WaterloggingPoint("P1", "Jingguang underpass", "Z1", None, 34.75, 113.65, "underpass")
FLOOD = (("rain", "rain_readings"), ("zone_rain", "gauge_rain"), ("waterlogging", "water_depths"),
         ("waterlogging", "point_rain", "offset.point_rain"),
         ("waterlogging", "point_neighbours", "offset.point_neighbours"), ("flood_zones", "zone_floods"),
         ("parking", "lot_orders", "offset.lot_orders"))


def event(a: dict) -> tuple[str, str, str | None]:
    parameters = dict(a["info"][0]["parameters"])
    return a["info"][0]["event"], a["msg_type"], parameters.get("level")


def test_rain_over_a_point_warns_of_its_closure_before_the_water_crosses_the_line(city_run):
    run = city_run(partitions=1)
    run.publish([("zones", "Z1", ZONE), ("points", "P1", POINT), ("gauges", "G1", RainGauge("G1", "Z1", 34.75, 113.65))])
    run.start_worker()
    # A downpour at the zone's gauge, told to the point before its water rises (5 mm every 5 minutes).
    run.publish([("rain_readings", "G1", RainGaugeReading("G1", T0 + 300 * k, 5.0, 300.0)) for k in range(1, 13)])
    run.wait_quiet(stages=FLOOD)
    # The underpass fills 3 cm every 5 minutes: the closure line (27 cm) at 45 minutes.
    run.publish([("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 300 * k, 3.0 * k)) for k in range(13)])
    run.wait_quiet(stages=FLOOD)

    alerts = run.records("alerts")
    warned = next(a for a in alerts if event(a)[:2] == ("Road waterlogging forecast", "Alert"))
    closed = next(a for a in alerts if event(a) == ("Road waterlogging", "Update", "closure"))
    assert parse_time(warned["sent"]) < parse_time(closed["sent"])
    info = warned["info"][0]
    assert (info["urgency"], info["certainty"]) == ("Expected", "Likely")
    assert parse_time(info["onset"]) > parse_time(warned["sent"])
    view = run.merged("waterlogging", "points")["P1"]
    assert view["forecast_60min_cm"] > view["depth_cm"] and view["quality"] == "reliable"


def test_a_depth_sensor_spike_closes_no_garage_and_no_road(city_run):
    run = city_run(partitions=1)
    lot = Lot("L1", "Jinshui underground", "Z1", 200, underground=True, lat=34.75, lon=113.65)
    point = WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65, "underpass")
    run.publish([("zones", "Z1", ZONE), ("points", "P1", point), ("lots", "L1", lot)])
    run.start_worker()
    depths = [5.0, 5.0, 120.0, 5.0, 5.0]  # one reading of 120 cm between two of 5
    run.publish([("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 60 * i, d)) for i, d in enumerate(depths)])
    run.wait_quiet(stages=FLOOD)

    assert run.records("alerts") == []
    assert run.records("lot_orders") == [] and run.records("closures") == [] and run.records("zone_floods") == []
    view = run.merged("waterlogging", "points")["P1"]
    assert (view["depth_cm"], view["quality"], view["alert_level"]) == (5.0, "reliable", None)


def test_water_at_one_point_while_the_points_around_it_are_dry_waits_for_a_second_reading(city_run):
    run = city_run(partitions=3)  # the points' words to each other travel between partitions
    points = [WaterloggingPoint(f"P{i}", f"Point {i}", "Z1", None, 34.75 + 0.003 * i, 113.65) for i in range(3)]
    run.publish([("zones", "Z1", ZONE), *[("points", p.point_id, p) for p in points]])
    run.start_worker()
    run.publish([("water_depths", p, WaterDepthReading(f"W-{p}", p, T0 + 60 * i, 0.0)) for p in ("P1", "P2") for i in range(3)])
    run.wait_quiet(stages=FLOOD)
    told = sorted((n["point_id"], n["neighbour_id"], n["water"]) for n in run.records("point_neighbours"))
    assert told == [("P0", "P1", "dry"), ("P0", "P2", "dry"), ("P1", "P2", "dry"), ("P2", "P1", "dry")]
    run.publish([("water_depths", "P0", WaterDepthReading("W-P0", "P0", T0 + 60 * i, d)) for i, d in enumerate([0.0, 18.0])])
    run.wait_quiet(stages=FLOOD)
    assert run.records("alerts") == []
    view = run.merged("waterlogging", "points")["P0"]
    assert (view["depth_cm"], view["quality"], view["quality_check"]) == (18.0, "doubtful", "neighbours_dry")
    run.publish([("water_depths", "P0", WaterDepthReading("W-P0", "P0", T0 + 120, 18.5))])
    run.wait_quiet(stages=FLOOD)
    assert [event(a) for a in run.records("alerts")] == [("Road waterlogging", "Alert", "watch")]
    assert ("P1", "P0", "wet") in [(n["point_id"], n["neighbour_id"], n["water"]) for n in run.records("point_neighbours")]


def test_a_rain_gauge_gone_silent_lets_its_zones_signal_step_down(city_run):
    run = city_run(partitions=1)  # silence is judged against the gauges that share a partition
    run.publish([("zones", "Z1", ZONE), ("gauges", "G1", RainGauge("G1", "Z1", 34.75, 113.65)),
                 ("gauges", "G2", RainGauge("G2", "Z1", 34.72, 113.62))])
    run.start_worker()
    # G1 measures 60 mm in an hour (orange: 50 mm in 3 h), then its sensor dies; G2 reads a dry
    # sky every ten minutes for three more hours. Counted for ever, G1 would hold orange up.
    heavy = [RainGaugeReading("G1", T0 + 600 * k, 10.0, 600.0) for k in range(1, 7)]
    dry = [RainGaugeReading("G2", T0 + 600 * k, 0.0, 600.0) for k in range(1, 25)]
    run.publish([("rain_readings", r.gauge_id, r) for r in sorted(heavy + dry, key=lambda r: r.event_time)])
    run.wait_quiet(stages=FLOOD)

    signals = [(a["msg_type"], dict(a["info"][0]["parameters"])["signal"]) for a in run.records("alerts")
               if a["info"][0]["event"] == "Rainstorm"]
    assert signals[0] == ("Alert", "orange") and signals[-2:] == [("Update", "cleared"), ("Cancel", "cleared")]
    zone = run.merged("zone_rain", "zones")["Z1"]
    assert (zone["signal"], zone["gauges_reporting"], zone["gauges_silent"]) == (None, 1, 1)
    silent = [g for g in run.records("gauge_rain") if not g["reporting"]]
    assert [(g["gauge_id"], g["as_of"]) for g in silent] == [("G1", "2026-07-20T07:30:00.000Z")]
