"""The flood nowcast: a point's response to rain is learned, depths ahead and crossings follow
from it, and a warning goes out before the water crosses the closure line, without flapping."""

from __future__ import annotations

import orjson
import pytest

from agents.nowcast import Forecast, Outlook, Response, forecast, learn, rate_of, step_outlook
from agents.waterlogging import WaterloggingStage
from schemas.events import WaterDepthReading
from schemas.records import PointRain
from schemas.reference import WaterloggingPoint
from streams import topics
from streams.effects import Effects, Source
from streams.reference import Reference
from streams.settings import Settings
from streams.state import Batch

S = Settings()
POINT = WaterloggingPoint("P1", "Wensan Rd underpass", "Z1", "S1", 30.27, 120.13, "underpass")
T0 = 1_784_534_400.0


def true_depths(cm_per_mm: float, drain_cm_h: float, rain: list[float], step_s: float = 300.0) -> list[float]:
    """A point that follows the model exactly: rain (mm/h) per step, depth floored at zero."""
    depth, out = 0.0, []
    for mm_h in rain:
        depth = max(0.0, depth + (cm_per_mm * mm_h - drain_cm_h) * step_s / 3600)
        out.append(depth)
    return out


def test_a_points_response_to_rain_is_learned_from_its_readings_to_within_five_percent():
    storms = ([20.0] * 12 + [0.0] * 12) * 3  # three wet hours, each followed by a dry one, 5-minute readings
    depths = true_depths(1.2, 8.0, storms)
    response, before = Response.initial(S), (0.0, 0.0)
    for i, (mm_h, depth) in enumerate(zip(storms, depths), start=1):
        t = 300.0 * i
        response = learn(response, (depth - before[1]) / (t - before[0]) * 3600, mm_h, depth, S)
        before = (t, depth)
    assert response.cm_per_mm == pytest.approx(1.2, rel=0.05)
    assert response.drain_cm_h == pytest.approx(8.0, rel=0.05)
    assert response.readings > 0


def test_a_dry_empty_point_teaches_nothing():
    response = Response.initial(S)
    assert learn(response, 0.0, 0.0, 0.0, S) is response


def steady(depth, rate_cm_h, rain_change=0.0, depth_at=T0):
    """A forecast at T0 for a point whose rain and recent rise both say `rate_cm_h`."""
    response = Response(1.0, 10.0)
    return forecast(depth, depth_at, T0, response, rate_cm_h, rate_cm_h + 10.0, rain_change, S)


def test_the_forecast_follows_the_rate_and_names_each_line_it_crosses_within_the_hour():
    f = steady(20.0, 14.0)  # the closure line (27 cm) half an hour away, severe (30 cm) in 43 minutes
    assert f.depths_cm == [23.5, 27.0, 34.0] and f.rate_cm_h == 14.0
    (closure, t1), (severe, t2) = f.crossings
    assert (closure, severe) == ("closure", "severe")
    assert abs(t1 - (T0 + 1800)) <= 60 and t2 == T0 + 43 * 60
    assert steady(20.0, -5.0).crossings == [] and steady(2.0, -5.0).depths_cm[-1] == 0.0
    assert steady(20.0, 6.0).crossings == []  # 27 cm in 70 minutes: beyond the hour


def test_rain_easing_off_is_taken_to_go_on_easing():
    steadily, easing = steady(20.0, 14.0), steady(20.0, 14.0, rain_change=-48.0)  # the rain gone in half an hour
    assert easing.depths_cm[-1] < steadily.depths_cm[-1] and easing.crossings == []


def test_a_line_the_water_should_have_crossed_since_the_reading_is_crossed_now():
    f = steady(26.0, 30.0, depth_at=T0 - 600)  # 5 cm since the reading ten minutes ago
    assert f.crossings[0] == ("closure", T0)


def test_the_rate_weighs_the_recent_rise_and_the_rain():
    response = Response(1.0, 10.0)
    assert rate_of(response, 4.0, 30.0, S) == pytest.approx(0.5 * 4.0 + 0.5 * (30.0 - 10.0))


def steps(crossings_by_minute, observed=None):
    """The outlook through forecasts with the given crossings, one a minute, after a forecast
    with the first minute's crossings (a warning needs a crossing predicted twice running)."""
    prior = Forecast(T0 - 60, [0.0, 0.0, 0.0], crossings_by_minute[0], 1.0)
    outlook, out = Outlook(Response.initial(S), latest=prior), []
    for i, crossings in enumerate(crossings_by_minute):
        at = T0 + 60 * i
        outlook, alert = step_outlook(outlook, Forecast(at, [0.0, 0.0, 0.0], crossings, 1.0),
                                      (observed or {}).get(i), POINT, S)
        out.append(None if alert is None else (alert.msg_type, alert.parameter("level"), alert.parameter("outcome")))
    return outlook, out


def test_a_predicted_closure_warns_as_expected_and_likely_with_its_onset():
    f = Forecast(T0, [20, 27, 34], [("closure", T0 + 1080)], 14.0)
    _, once = step_outlook(Outlook(Response.initial(S)), f, None, POINT, S)
    assert once is None  # predicted once is not yet a warning
    _, alert = step_outlook(Outlook(Response.initial(S), latest=f), f, None, POINT, S)
    info = alert.info[0]
    assert (alert.msg_type, info.urgency, info.certainty) == ("Alert", "Expected", "Likely")
    assert info.event == "Road waterlogging forecast"
    assert info.onset == "2026-07-20T08:18:00-00:00" and info.severity == "Severe"


def test_a_watch_or_warning_crossing_alone_is_not_warned_of_ahead():
    _, out = steps([[("watch", T0 + 600), ("warning", T0 + 1200)]])
    assert out == [None]


def test_a_wobbling_forecast_does_not_flap_and_one_gone_for_the_hold_time_is_cancelled():
    closure = [("closure", T0 + 900)]
    _, out = steps([closure, [], [], closure] + [[]] * 11)
    assert [o for o in out if o] == [("Alert", "closure", None), ("Cancel", "closure", "not_reached")]
    assert out.index(("Cancel", "closure", "not_reached")) == 14  # 10 minutes after it was last predicted


def test_a_crossing_that_moves_little_is_not_updated_and_one_that_moves_more_is():
    _, out = steps([[("closure", T0 + 600)], [("closure", T0 + 800)], [("closure", T0 + 1300)], [("severe", T0 + 1300)],
                    [("closure", T0 + 1000)]])
    assert out == [("Alert", "closure", None), None, ("Update", "closure", None), ("Update", "severe", None), None]


def test_a_crossing_beyond_the_warning_horizon_is_shown_but_not_warned_of():
    later = 60 * S.nowcast.warn_within_min
    _, out = steps([[("closure", T0 + later + 1)], [("closure", T0 + 60 + later)], [("closure", T0 + 120 + later)]])
    assert out == [None, None, ("Alert", "closure", None)]


def test_the_warning_ends_when_the_water_gets_there():
    _, out = steps([[("closure", T0 + 120)], [("closure", T0 + 120)], []], observed={2: "closure"})
    assert out[2] == ("Cancel", "closure", "reached")


def test_rain_over_the_zone_warns_before_the_depth_crosses_the_closure_line():
    ref = Reference(S)
    ref.city.points["P1"] = POINT
    stage, e = WaterloggingStage(0, S, ref), Effects("waterlogging", Batch("cb:{x.0}", 0, {}))
    stage.restore({})
    depths = true_depths(1.5, 10.0, [40.0] * 24)  # 50 cm an hour rise while 40 mm/h falls
    stage.on_event(WaterDepthReading("W1", "P1", T0, 0.0), Source("flood.water_depths", 0, 0, b"P1", b"{}"), e)
    stage.on_event(PointRain("P1", "Z1", T0 + 60, 40.0), Source("flood.point_rain", 0, 0, b"P1", b"{}"), e)
    for i, depth in enumerate(depths, start=1):
        reading = WaterDepthReading("W1", "P1", T0 + 300 * i, round(depth, 1))
        stage.on_event(reading, Source("flood.water_depths", 0, i, b"P1", b"{}"), e)
    alerts = [orjson.loads(v) for t, _, v, _ in e.sends if t is topics.alerts]
    observed = {dict(a["info"][0]["parameters"])["level"]: a["sent"]
                for a in alerts if a["info"][0]["event"] == "Road waterlogging"}
    ahead = [(a["msg_type"], dict(a["info"][0]["parameters"]), a["sent"], a["info"][0]["response_type"])
             for a in alerts if a["info"][0]["event"] == "Road waterlogging forecast"]
    assert ahead[0][0] == "Alert" and ahead[0][2] < observed["closure"]  # warned before the closure line
    assert ahead[0][1]["level"] == "severe" and ahead[0][1]["expected_at"] > ahead[0][2]
    # It ends, as it came true, when the severe line is reached: no all clear while the road floods.
    assert [(m, p.get("outcome"), rt) for m, p, _, rt in ahead[-2:]] == [
        ("Update", "reached", "None"), ("Cancel", "reached", "None")]
    assert ahead[-1][2] == observed["severe"]
    stage.flush(e)
    view = stage.points["P1"]
    assert view["warning_of"] is None and view["forecast_60min_cm"] > view["depth_cm"]


def test_what_if_names_the_lines_a_given_rain_brings_each_point_to_and_when():
    from agents.nowcast_check import what_if_points

    other = WaterloggingPoint("P2", "Elsewhere", "Z2", None, 30.2, 120.1, "road_dip")
    learned = {"P1": Outlook(Response(1.0, 10.0, readings=12))}  # P2 has no history: the settings' response
    reached = list(what_if_points(learned, {"P1": (T0, 5.0)}, {"P1": POINT, "P2": other}, {"Z1", "Z2"}, 40.0, 1.0, T0, S))
    # P1 rises 30 cm an hour from 5 cm: watch (15 cm) in 20 min, warning (20) 30, closure (27) 44, severe (30) 50.
    # P2, at the settings' 10 cm an hour from dry, would reach its watch line in 90 minutes: past the hour.
    assert [(p, level, round((t - T0) / 60)) for p, level, t in reached] == [
        ("P1", "watch", 20), ("P1", "warning", 30), ("P1", "closure", 44), ("P1", "severe", 50)]
    assert [level for _, level, _ in what_if_points(learned, {}, {"P2": other}, {"Z2"}, 40.0, 2.0, T0, S)] == ["watch", "warning"]
    assert list(what_if_points(learned, {}, {"P1": POINT}, {"Z9"}, 40.0, 1.0, T0, S)) == []


def test_the_nowcast_check_on_a_generated_truth_warns_every_crossing_ahead():
    from agents.nowcast_check import check

    lines: list[str] = []
    figures = check("truth", 7, 24, 240, S, lines.append)
    assert figures["points_crossing"] > 0 and figures["warned_ahead"] == figures["points_crossing"]
    assert figures["min_lead_min"] > 0 and figures["forecasts"] >= figures["not_come_true"]
    assert lines[-1].startswith("closure crossings:")


def test_the_nowcast_check_command_runs_without_kafka_or_redis(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    citybrain = Path(sys.executable).parent / "citybrain"
    env = {**os.environ, "CITYBRAIN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "CITYBRAIN_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([str(citybrain), "nowcast-check", "--points", "8", "--minutes", "120"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("closure crossings: 1, warned ahead: 1")


def test_a_warning_standing_on_a_sensor_gone_faulty_is_withdrawn_not_cleared():
    ref = Reference(S)
    ref.city.points["P1"] = POINT
    stage, e = WaterloggingStage(0, S, ref), Effects("waterlogging", Batch("cb:{x.0}", 0, {}))
    stage.restore({})
    stage.on_event(PointRain("P1", "Z1", T0, 40.0), Source("flood.point_rain", 0, 0, b"P1", b"{}"), e)
    for i, depth in enumerate([0.0, 4.0, 8.0, 12.0, 16.0, 20.0, -999.0]):
        stage.on_event(WaterDepthReading("W1", "P1", T0 + 300 * i, depth), Source("flood.water_depths", 0, i, b"P1", b"{}"), e)
    ahead = [orjson.loads(v) for t, _, v, _ in e.sends if t is topics.alerts]
    ahead = [a for a in ahead if a["info"][0]["event"] == "Road waterlogging forecast"]
    assert ahead[0]["msg_type"] == "Alert"
    assert [(a["msg_type"], dict(a["info"][0]["parameters"])["outcome"], a["info"][0]["response_type"]) for a in ahead[-2:]] == [
        ("Update", "sensor_unavailable", "None"), ("Cancel", "sensor_unavailable", "None")]
    assert stage.outlook["P1"].incident is None


def test_points_tell_the_points_around_them_of_their_water_and_a_lone_wet_one_is_doubted():
    from schemas.records import PointNeighbour

    ref = Reference(S)
    near = {pid: WaterloggingPoint(pid, pid, "Z1", None, 30.27 + 0.003 * i, 120.13) for i, pid in enumerate(["P1", "P2", "P3"])}
    far = WaterloggingPoint("P9", "P9", "Z9", None, 30.5, 120.5)
    ref.city.points.update({**near, "P9": far})
    stage, e = WaterloggingStage(0, S, ref), Effects("waterlogging", Batch("cb:{x.0}", 0, {}))
    stage.restore({})

    def reading(pid, i, depth):
        source = Source("flood.water_depths", 0, i, pid.encode(), b"{}")
        stage.on_event(WaterDepthReading("W", pid, T0 + 60 * i, depth), source, e)

    def told():
        return [(k.decode(), orjson.loads(v)) for t, k, v, _ in e.sends if t is topics.point_neighbours]

    reading("P2", 0, 0.0)
    assert [(k, v["neighbour_id"], v["water"]) for k, v in told()] == [("P1", "P2", "dry"), ("P3", "P2", "dry")]
    reading("P2", 1, 0.2)  # still dry: nobody is told again
    assert len(told()) == 2
    for k, v in told():  # the words reach their points (here the same partition), P3's too
        stage.on_event(PointNeighbour(**v), Source("flood.point_neighbours", 0, 0, k.encode(), b"{}"), e)
    stage.on_event(PointNeighbour("P1", "P3", "dry", T0), Source("flood.point_neighbours", 0, 1, b"P1", b"{}"), e)
    stage.on_event(PointNeighbour("P1", "P3", "wet", T0 - 600), Source("flood.point_neighbours", 0, 2, b"P1", b"{}"), e)
    assert stage.told["P1", "P3"].water == "dry"  # an older word, delivered late, changes nothing
    reading("P1", 2, 0.0)
    reading("P1", 3, 18.0)  # up to the watch line while both points around it are dry
    assert (stage.watch["P1"].quality, stage.watch["P1"].quality_check) == ("doubtful", "neighbours_dry")
    assert not [v for t, _, v, _ in e.sends if t is topics.alerts]
    reading("P1", 4, 18.5)
    assert stage.watch["P1"].level == "watch" and stage.watch["P1"].quality_check == "second_reading"
    assert ("P9", "P1", "wet") not in [(k, v["neighbour_id"], v["water"]) for k, v in told()]  # far away: not a neighbour
