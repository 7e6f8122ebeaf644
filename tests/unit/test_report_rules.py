"""Residents' reports: corroboration of monitored points, clusters where no point is monitored."""

from agents.reports import CellWatch, cell_of, clear_cell, distance_m, nearest_point, quiet_cells, step_cell
from agents.waterlogging import PointWatch, corroborate, step_point
from schemas.events import WaterDepthReading
from schemas.records import CellReport, PointReport
from schemas.reference import WaterloggingPoint
from streams.settings import Settings

S = Settings()
POINT = WaterloggingPoint("P1", "Wensan Rd underpass", "Z1", "S1", 30.2700, 120.1300, "underpass")


def test_distances_are_great_circle_metres():
    assert distance_m(30.27, 120.13, 30.27, 120.13) == 0
    assert abs(distance_m(30.27, 120.13, 30.2709, 120.13) - 100) < 1  # 0.0009 deg of latitude


def test_the_nearest_point_is_found_with_its_distance():
    far = WaterloggingPoint("P2", "far", "Z1", None, 30.30, 120.13, "road_dip")
    point, metres = nearest_point({"P1": POINT, "P2": far}, 30.2702, 120.1300)
    assert point is POINT and 20 < metres < 25


def test_a_report_turns_an_open_possible_incident_into_an_observed_one():
    watch, alerts = step_point(PointWatch(), WaterDepthReading("W", "P1", 0.0, 22.0), POINT, S)
    assert alerts[0].info[0].certainty == "Possible"
    watch, update = corroborate(watch, PointReport("P1", "R1", 60.0, 40.0), POINT, S)
    assert [(a.msg_type, a.info[0].certainty) for a in update] == [("Update", "Observed")]
    assert update[0].references == f"{alerts[0].sender},{alerts[0].identifier},{alerts[0].sent}"
    again, none = corroborate(watch, PointReport("P1", "R2", 120.0, 40.0), POINT, S)
    assert none == [] and again.corroborated


def test_a_report_shortly_before_the_water_rises_makes_the_alert_observed_from_the_start():
    watch, none = corroborate(PointWatch(), PointReport("P1", "R1", 0.0, 40.0), POINT, S)
    assert none == []
    _, alerts = step_point(watch, WaterDepthReading("W", "P1", 600.0, 22.0), POINT, S)
    assert alerts[0].info[0].certainty == "Observed"
    _, late = step_point(watch, WaterDepthReading("W", "P1", 600.0 + S.reports.window_s + 1, 22.0), POINT, S)
    assert late[0].info[0].certainty == "Possible"


def report(i, t, cell="c1"):
    return CellReport(cell, f"R{i}", t, 30.28, 120.14)


def test_three_reports_within_half_an_hour_raise_a_likely_alert_once():
    watch, out = CellWatch(), []
    for i, t in enumerate([0.0, 600.0, 1200.0, 1300.0]):
        watch, alert = step_cell(watch, report(i, t), S)
        out.append(alert)
    assert [a.msg_type if a else None for a in out] == [None, None, "Alert", None]
    assert out[2].info[0].certainty == "Likely"


def test_reports_spread_over_more_than_the_window_do_not_cluster():
    watch = CellWatch()
    for i, t in enumerate([0.0, 1000.0, 2000.0, 3000.0]):
        watch, alert = step_cell(watch, report(i, t), S)
        assert alert is None


def test_a_repeated_report_counts_once():
    watch = CellWatch()
    for t in (0.0, 10.0, 20.0):
        watch, alert = step_cell(watch, report(1, t), S)
        assert alert is None


def test_a_quiet_hour_clears_the_cell_at_the_moment_it_went_quiet():
    watch = CellWatch()
    for i, t in enumerate([0.0, 60.0, 120.0]):
        watch, _ = step_cell(watch, report(i, t), S)
    assert quiet_cells({"c1": watch}, 120.0 + S.reports.clear_s - 1, S) == []
    assert quiet_cells({"c1": watch}, 120.0 + S.reports.clear_s, S) == ["c1"]
    cleared, alert = clear_cell(watch, "c1", S)
    assert alert.msg_type == "Cancel" and cleared.incident is None
    assert alert.sent == "1970-01-01T01:02:00-00:00"


def test_cells_are_about_half_a_kilometre():
    assert cell_of(30.2701, 120.1301, S) == cell_of(30.2704, 120.1304, S)
    assert cell_of(30.2701, 120.1301, S) != cell_of(30.2751, 120.1301, S)


def test_reports_arriving_out_of_order_cluster_the_same():
    watch, out = CellWatch(), []
    for i, t in [(4, 1200.0), (2, 600.0), (3, 900.0)]:
        watch, alert = step_cell(watch, report(i, t), S)
        out.append(alert)
    assert out[-1] is not None and out[-1].sent == "1970-01-01T00:20:00-00:00"


def test_dead_letters_of_personal_topics_withhold_the_identifiers():
    import orjson

    from streams.effects import Source, dead_letter
    from streams.topics import topic_name

    topic = topic_name("flood_reports")
    bad = orjson.dumps({"report_id": "R1", "lat": 91, "phone": "13800000001"})
    letter = dead_letter(Source(topic, 0, 7, b"R1", bad), "CitizenFloodReport.lat: must be <= 90")
    assert "13800000001" not in letter.raw and orjson.loads(letter.raw)["lat"] == 91
    unreadable = dead_letter(Source(topic, 0, 8, b"R2", b'{"phone": "13800000001", '), "not JSON")
    assert "13800000001" not in unreadable.raw
    plain = dead_letter(Source(topic_name("traffic_readings"), 0, 9, None, b"garbage"), "not JSON")
    assert plain.raw == "garbage"


def test_after_the_all_clear_a_late_report_opens_nothing_and_a_new_cluster_is_a_new_incident():
    watch = CellWatch()
    for i, t in enumerate([0.0, 60.0, 120.0]):
        watch, first = step_cell(watch, report(i, t), S)
    watch, cancel = clear_cell(watch, "c1", S)
    watch, late = step_cell(watch, report(9, 100.0), S)
    assert late is None
    for i, t in enumerate([9000.0, 9060.0, 9120.0], start=10):
        watch, again = step_cell(watch, report(i, t), S)
    assert again.msg_type == "Alert" and again.identifier != first.identifier
