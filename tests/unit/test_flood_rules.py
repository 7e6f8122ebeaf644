"""Waterlogging rules: levels at and around every line, hysteresis and hold, rises, sensor health."""

import pytest

from agents.flood import waterlogging_level
from agents.waterlogging import PointWatch, step_point
from schemas.events import WaterDepthReading
from schemas.reference import WaterloggingPoint
from streams.settings import Settings

S = Settings()
POINT = WaterloggingPoint("P1", "Wensan Rd underpass", "Z1", "S1", 30.27, 120.13, "underpass")


@pytest.mark.parametrize(
    ("depth", "level"),
    [(0, None), (14.9, None), (15, "watch"), (19.9, "watch"), (20, "warning"), (26.9, "warning"),
     (27, "closure"), (29.9, "closure"), (30, "severe"), (80, "severe")],
)
def test_levels_follow_the_depth_lines(depth, level):
    assert waterlogging_level(depth, S) == level


def run(depths, start=0.0, step=60.0, watch=None):
    """Feed depths a minute apart; returns the final watch and (msg_type, level) of each alert."""
    watch = watch or PointWatch()
    out = []
    for i, depth in enumerate(depths):
        watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", start + step * i, depth), POINT, S)
        out += [(a.msg_type, a.parameter("level") or a.parameter("sensor_health"), a.info[0].event) for a in alerts]
    return watch, out


def test_crossing_lines_raises_then_updates_the_same_incident():
    watch, out = run([5, 16, 21, 28, 31])
    assert [(m, lvl) for m, lvl, _ in out] == [("Alert", "watch"), ("Update", "warning"), ("Update", "closure"),
                                               ("Update", "severe")]
    assert watch.incident.step == 4


def test_a_depth_hovering_at_a_line_does_not_flap():
    _, out = run([21, 19.5, 20.5, 19, 20.2, 18.5, 20])
    assert [(m, lvl) for m, lvl, _ in out] == [("Alert", "warning")]


def test_coming_down_needs_the_margin_for_the_hold_time():
    # Warning line 20, margin 3: under 17 for 10 minutes (readings a minute apart).
    _, out = run([21] + [16.5] * 10)
    assert [m for m, _, _ in out] == ["Alert"]
    _, out = run([21] + [16.5] * 11)
    assert [(m, lvl) for m, lvl, _ in out] == [("Alert", "warning"), ("Update", "watch")]


def test_a_reading_back_above_the_clearing_line_restarts_the_hold():
    _, out = run([21] + [16] * 6 + [18] + [16] * 6)
    assert [m for m, _, _ in out] == ["Alert"]


def test_falling_below_the_watch_line_for_the_hold_time_cancels():
    watch, out = run([28] + [5] * 11)
    assert [(m, lvl) for m, lvl, _ in out] == [("Alert", "closure"), ("Cancel", "cleared")]
    assert watch.incident is None and watch.level is None


def test_a_fast_rise_warns_below_the_watch_line():
    # +10 cm within 30 minutes, still under 15 cm.
    _, out = run([1, 3, 5, 8, 11])
    assert [(m, lvl) for m, lvl, _ in out] == [("Alert", "watch")]
    _, out = run([1, 3, 5, 8, 10.9])
    assert out == []


def test_a_slow_rise_does_not_warn():
    _, out = run([0, 2, 4, 6, 8, 10, 12], step=600.0)
    assert out == []


def test_impossible_depths_mark_the_sensor_faulty_not_the_road_dry():
    watch, out = run([5, -20, 400])
    assert out == [("Alert", "faulty", "Waterlogging sensor fault")]
    assert watch.health == "faulty"
    watch, out = run([12], start=1000.0, watch=watch)
    assert out == [("Cancel", "ok", "Waterlogging sensor fault")] and watch.health == "ok"


def test_a_faulty_reading_does_not_clear_a_waterlogging_alert():
    watch, out = run([25, -5, -5, -5, -5, -5, -5, -5, -5, -5, -5, -5, -5])
    assert [m for m, _, e in out if e == "Road waterlogging"] == ["Alert"]
    assert watch.level == "warning"


def test_the_same_depth_for_an_hour_is_a_stuck_sensor():
    watch, out = run([12.3] * 61)
    assert out == [("Alert", "stuck", "Waterlogging sensor fault")]
    _, out = run([12.3] * 60)
    assert out == []


def test_a_dry_road_reading_zero_is_not_stuck():
    _, out = run([0.0] * 120)
    assert out == []


def test_an_older_or_repeated_reading_changes_nothing():
    watch, _ = run([21])
    again, alerts = step_point(watch, WaterDepthReading("W1", "P1", 0.0, 40.0), POINT, S)
    assert again == watch and alerts == []


def test_identifiers_repeat_on_replay_and_chain_by_reference():
    def messages():
        watch, out = PointWatch(), []
        for i, depth in enumerate([5, 16, 28] + [5] * 11):
            watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", 60.0 * i, depth), POINT, S)
            out += alerts
        return out

    first, second = messages(), messages()
    assert [a.identifier for a in first] == [a.identifier for a in second]
    assert [a.msg_type for a in first] == ["Alert", "Update", "Cancel"]
    assert [a.references for a in first[1:]] == [f"{a.sender},{a.identifier},{a.sent}" for a in first[:-1]]


def test_every_flood_and_sensor_message_validates_against_the_cap_12_xsd():
    from lxml import etree

    from schemas.cap import to_xml
    from tests.unit.test_cap import XSD

    watch, messages = PointWatch(), []
    for i, depth in enumerate([5, 16, 28, 31, -3, 12] + [5] * 11):
        watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", 60.0 * i, depth), POINT, S)
        messages += alerts
    assert {a.info[0].event for a in messages} == {"Road waterlogging", "Waterlogging sensor fault"}
    for alert in messages:
        assert XSD.validate(etree.fromstring(to_xml(alert).encode())), XSD.error_log


def test_a_point_silent_while_others_report_is_stale_until_it_speaks_again():
    from agents.waterlogging import mark_stale, silent_points

    quiet, _ = run([22])
    talking, _ = run([3] * 20)
    assert silent_points({"P1": quiet, "P2": talking}, S.waterlogging.sensor_silent_s - 1, S) == []
    assert silent_points({"P1": quiet, "P2": talking}, S.waterlogging.sensor_silent_s, S) == ["P1"]
    stale, alert = mark_stale(quiet, POINT, S)
    assert (alert.msg_type, alert.parameter("sensor_health")) == ("Alert", "stale")
    assert alert.sent == "1970-01-01T00:15:00-00:00"  # when the silence reached 15 minutes
    assert stale.level == "warning"  # still under alert: silence is not a dry road
    back, alerts = step_point(stale, WaterDepthReading("W1", "P1", S.waterlogging.sensor_silent_s + 60, 21.0), POINT, S)
    assert [(a.msg_type, a.parameter("sensor_health")) for a in alerts] == [("Cancel", "ok")]
    assert back.health == "ok"


def qualities(depths, start=0.0, step=60.0):
    """Each reading's (quality, check) as the point flags it, and the alerts (msg_type, level)."""
    watch, flags, out = PointWatch(), [], []
    for i, depth in enumerate(depths):
        watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", start + step * i, depth), POINT, S)
        flags.append((watch.quality, watch.quality_check))
        out += [(a.msg_type, a.parameter("level")) for a in alerts]
    return watch, flags, out


def test_a_single_spike_is_doubtful_and_raises_nothing():
    watch, flags, out = qualities([5, 120, 5, 6])
    assert flags == [("reliable", None), ("doubtful", "rate_of_rise"), ("reliable", None), ("reliable", None)]
    assert out == [] and watch.level is None and watch.held is None


def test_a_spike_past_the_soft_limit_is_doubtful_for_that():
    _, flags, out = qualities([5, 280, 5])
    assert flags[1] == ("doubtful", "soft_limit") and out == []


def test_a_second_consistent_reading_confirms_a_doubtful_one():
    watch, flags, out = qualities([5, 100, 104])
    assert flags[1:] == [("doubtful", "rate_of_rise"), ("reliable", "second_reading")]
    assert out == [("Alert", "severe")]
    watch, _ = step_point(watch, WaterDepthReading("W1", "P1", 180.0, 104.5), POINT, S)
    assert watch.quality == "reliable" and watch.quality_check is None  # consistent with the accepted 104


def test_an_alert_on_a_confirmed_reading_says_what_confirmed_it():
    watch = PointWatch()
    for i, depth in enumerate([5, 100, 104]):
        watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", 60.0 * i, depth), POINT, S)
    (alert,) = alerts
    assert (alert.parameter("reading_quality"), alert.parameter("quality_check")) == ("reliable", "second_reading")
    assert "Confirmed by a second reading." in next(i for i in alert.info if i.language == "en-US").description


def test_readings_that_disagree_with_each_other_stay_doubtful():
    _, flags, out = qualities([5, 100, 5, 120, 5])
    assert [q for q, _ in flags] == ["reliable", "doubtful", "reliable", "doubtful", "reliable"] and out == []


def test_water_draining_faster_than_it_can_is_doubtful():
    _, flags, out = qualities([5, 20, 35, 50, 65, 80, 95, 5])  # 15 cm a minute up, then 90 cm in one
    assert flags[-1] == ("doubtful", "rate_of_fall")
    assert out == [("Alert", "warning"), ("Update", "severe")]  # no step down on the drop alone


@pytest.mark.parametrize("rise, quality", [(29.0, "reliable"), (30.0, "reliable"), (31.0, "doubtful")])
def test_the_rate_of_rise_limit_at_and_around_it(rise, quality):
    _, flags, _ = qualities([5, 5 + rise])
    assert flags[1][0] == quality


def test_a_residents_report_confirms_an_unusual_depth_but_not_a_jump_no_water_makes():
    from agents.waterlogging import corroborate
    from schemas.records import PointReport

    jump, _, out = qualities([5, 100])
    assert jump.held == (60.0, 100) and out == []
    after, alerts = corroborate(jump, PointReport("P1", "R1", 90.0, 40.0), POINT, S)
    assert alerts == [] and after.held == (60.0, 100)  # only a second reading confirms a jump
    watch = PointWatch()
    for i, depth in enumerate([5, 12, 16]):  # up to the watch line with no rain in the zone
        watch, _ = step_point(watch, WaterDepthReading("W1", "P1", 300.0 * i, depth), POINT, S, ("dry_zone",))
    assert watch.quality_check == "dry_zone"
    watch, alerts = corroborate(watch, PointReport("P1", "R1", 700.0, 40.0), POINT, S)
    assert [(a.msg_type, a.parameter("level"), a.info[0].certainty) for a in alerts] == [("Alert", "watch", "Observed")]
    assert (watch.quality, watch.quality_check, watch.held) == ("reliable", "resident_report", None)


def test_past_the_soft_limit_only_the_first_reading_is_doubtful():
    _, flags, _ = qualities([130, 140, 151, 152, 153, 154])
    assert [q for q, _ in flags] == ["reliable", "reliable", "doubtful", "reliable", "reliable", "reliable"]


def test_a_held_reading_is_not_confirmed_by_one_long_after():
    watch, _, _ = qualities([5, 100])
    later, _ = step_point(watch, WaterDepthReading("W1", "P1", 60.0 + 2 * 3600, 101), POINT, S)
    assert later.quality_check is None  # judged on its own (96 cm in two hours), not as the spike's second reading
    soon, _ = step_point(watch, WaterDepthReading("W1", "P1", 120.0, 101), POINT, S)
    assert soon.quality_check == "second_reading"


def test_a_depth_within_the_flat_band_for_an_hour_is_a_stuck_sensor():
    depths = [40.0, 40.3, 39.8, 40.2] * 16  # within 0.5 cm of 40 for over an hour, never exactly equal in a row
    watch, flags, _ = qualities(depths)
    assert watch.health == "stuck" and flags[-1] == ("unreliable", "flat_line")
    watch, _, _ = qualities([40.0, 40.3, 41.0, 40.2] * 16)  # leaves the band every four minutes
    assert watch.health == "ok"


def test_water_reaching_the_watch_line_while_the_zones_gauges_had_no_rain_is_doubtful_until_confirmed():
    watch = PointWatch()
    flags = []
    for i, depth in enumerate([5, 12, 16, 17]):
        watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", 300.0 * i, depth), POINT, S, ("dry_zone",))
        flags.append((watch.quality, watch.quality_check, [a.parameter("level") for a in alerts]))
    assert flags == [("reliable", None, []), ("reliable", None, []), ("doubtful", "dry_zone", []),
                     ("reliable", "second_reading", ["watch"])]
    _, alerts = step_point(PointWatch(), WaterDepthReading("W1", "P1", 0.0, 16), POINT, S)  # rain unknown: no check
    assert [a.parameter("level") for a in alerts] == ["watch"]


def test_water_reaching_the_watch_line_while_the_points_around_are_dry_is_doubtful_until_confirmed():
    from agents.waterlogging import neighbours_dry
    from schemas.records import PointNeighbour

    def told(*waters):
        return {f"N{i}": PointNeighbour("P1", f"N{i}", w, 0.0) for i, w in enumerate(waters)}

    assert neighbours_dry(told("dry", "dry"), S)
    assert not neighbours_dry(told("dry"), S)  # one dry neighbour is not enough to doubt a sensor
    assert not neighbours_dry(told("dry", "unknown"), S)  # a neighbour at fault says nothing
    assert not neighbours_dry(told("dry", "dry", "wet"), S)  # water at any neighbour is water in the area
    watch, flags = PointWatch(), []
    for i, depth in enumerate([5, 12, 16, 17]):
        watch, alerts = step_point(watch, WaterDepthReading("W1", "P1", 300.0 * i, depth), POINT, S, ("neighbours_dry",))
        flags.append((watch.quality, watch.quality_check, [a.parameter("level") for a in alerts]))
    assert flags == [("reliable", None, []), ("reliable", None, []), ("doubtful", "neighbours_dry", []),
                     ("reliable", "second_reading", ["watch"])]


def test_a_points_water_as_its_neighbours_weigh_it():
    from agents.waterlogging import water_of

    assert water_of(PointWatch(), S) is None
    assert water_of(run([0.4])[0], S) == "dry" and water_of(run([0.4, 3])[0], S) == "wet"
    assert water_of(run([0.4, 500])[0], S) == "unknown"  # faulty
    assert water_of(run([0.4, 100])[0], S) == "dry"  # a held spike is not water until confirmed
