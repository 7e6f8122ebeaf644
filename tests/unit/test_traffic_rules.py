"""Traffic rules: GB/T 33171 TPI, congestion hysteresis and Webster timing."""

import dataclasses

import pytest

from agents.traffic import (
    CongestionWatch,
    city_index,
    congestion_level,
    delay_time_proportion,
    fold_reading,
    step_congestion,
    summarize,
    traffic_performance_index,
    webster,
)
from schemas.events import TrafficReading
from schemas.records import CityIndexPart
from schemas.reference import Approach, Intersection, Segment, Zone
from streams.settings import Settings

S = Settings()
BANDS = S.traffic.dtp_bands
SEGMENT = Segment("S1", "Yan'an Rd", "Z1", "arterial", 2.0, 50.0, 2)
ZONE = Zone("Z1", "West Lake", [(30.0, 120.0), (30.0, 120.1), (30.1, 120.1), (30.0, 120.0)])


def tpi(dtp):
    return traffic_performance_index(dtp, BANDS)


@pytest.mark.parametrize(
    ("dtp", "expected"),
    [(0.0, 0.0), (0.15, 1.0), (0.3, 2.0), (0.4, 3.0), (0.5, 4.0), (0.55, 5.0), (0.6, 6.0), (0.65, 7.0), (0.7, 8.0),
     (0.85, 9.0), (1.0, 10.0)],
)
def test_tpi_is_linear_inside_each_gbt_33171_band(dtp, expected):
    assert tpi(dtp) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("index", "level"),
    [(1.99, "free"), (2.0, "basically_free"), (3.99, "basically_free"), (4.0, "light"), (5.99, "light"),
     (6.0, "moderate"), (7.99, "moderate"), (8.0, "severe"), (10.0, "severe")],
)
def test_congestion_level_follows_the_tpi_bands(index, level):
    assert congestion_level(index) == level


def test_band_edges_just_below_stay_in_the_lower_level():
    assert congestion_level(tpi(0.5999)) == "light"
    assert congestion_level(tpi(0.6)) == "moderate"
    assert congestion_level(tpi(0.6999)) == "moderate"
    assert congestion_level(tpi(0.7)) == "severe"


def test_delay_time_proportion_is_clamped():
    assert delay_time_proportion(25, 50) == 0.5
    assert delay_time_proportion(60, 50) == 0.0  # faster than free flow is not negative delay
    assert delay_time_proportion(0, 50) == 1.0


def reading(t, count, speed, sensor="D1", occupancy=0.2, interval=30.0):
    return TrafficReading(sensor, "S1", t, count, interval, speed, occupancy)


def test_window_indicators_weight_speed_by_volume():
    acc = None
    acc = fold_reading(acc, reading(0, 30, 20.0))
    acc = fold_reading(acc, reading(30, 10, 40.0, occupancy=0.4))
    w = summarize(SEGMENT, 0.0, acc, S)
    assert w.vehicles == 40
    assert w.flow_vph == pytest.approx(40 * 3600 / 60)
    assert w.speed_kmh == pytest.approx((30 * 20 + 10 * 40) / 40)
    assert w.occupancy == pytest.approx(0.3)
    assert w.dtp == pytest.approx(0.5)
    assert w.tpi == pytest.approx(4.0)
    assert w.level == "light"
    assert w.vehicle_km == pytest.approx(2400 * (60 / 3600) * 2.0)


def test_window_with_no_vehicles_is_free_flowing():
    w = summarize(SEGMENT, 0.0, fold_reading(None, reading(0, 0, 0.0)), S)
    assert w.speed_kmh == 50.0 and w.tpi == 0.0


def window(tpi_value, start=0.0):
    return dataclasses.replace(summarize(SEGMENT, start, fold_reading(None, reading(start, 10, 25.0)), S), tpi=tpi_value)


def run(tpis, watch=None, first_window=0):
    watch = watch or CongestionWatch()
    out = []
    for i, value in enumerate(tpis, start=first_window):
        watch, alert = step_congestion(watch, window(value, start=60.0 * i), SEGMENT, ZONE, S)
        out.append(alert)
    return watch, out


def test_alert_is_raised_only_after_n_consecutive_congested_windows():
    _, alerts = run([6.5, 6.5])
    assert alerts == [None, None]
    _, alerts = run([6.5, 6.5, 6.5])
    assert [a.msg_type if a else None for a in alerts] == [None, None, "Alert"]
    assert alerts[2].info[0].severity == "Moderate" and alerts[2].parameter("level") == "moderate"
    assert alerts[2].references is None


def at_times(tpis_by_start, s=S):
    """Windows at the given starts (a feed's reporting times), through the congestion rule."""
    watch, out = CongestionWatch(), []
    for start, value in tpis_by_start:
        watch, alert = step_congestion(watch, window(value, start=start), SEGMENT, ZONE, s)
        out.append(alert.msg_type if alert else None)
    return out


def test_a_feed_reporting_every_five_minutes_is_raised_once_congested_for_raise_s():
    # Two readings five minutes apart: congested from the first window's start to the second's
    # end (6 minutes >= 3). Counting windows, the third reading raised it, 11 minutes in.
    assert S.congestion.raise_s == 180.0
    assert at_times([(0.0, 6.5), (300.0, 6.5)]) == [None, "Alert"]


@pytest.mark.parametrize("raise_s, kinds", [(119.0, [None, "Alert"]), (120.0, [None, "Alert"]), (121.0, [None, None])])
def test_raising_at_and_around_raise_s(raise_s, kinds):
    s = Settings.of(congestion_raise_s=raise_s)
    assert at_times([(0.0, 6.5), (60.0, 6.5)], s) == kinds  # congested 120 s by the second window's end


def test_a_feed_with_a_gap_is_raised_at_its_next_congested_window_not_hours_later():
    assert at_times([(0.0, 6.5), (3 * 3600.0, 6.5), (3 * 3600.0 + 60, 6.5)]) == [None, "Alert", None]


def test_clearing_counts_minutes_of_calm_even_from_a_sparse_feed():
    assert S.congestion.clear_s == 120.0
    assert at_times([(0.0, 6.5), (300.0, 6.5), (600.0, 4.0), (900.0, 4.0)]) == [None, "Alert", None, "Cancel"]
    s = Settings.of(congestion_clear_s=61.0)
    congested_then_calm = [(0.0, 6.5), (60.0, 6.5), (120.0, 6.5), (180.0, 4.0), (240.0, 4.0)]
    assert at_times(congested_then_calm, s) == [None, None, "Alert", None, "Cancel"]
    s = Settings.of(congestion_clear_s=60.0)
    assert at_times([(0.0, 6.5), (60.0, 6.5), (120.0, 6.5), (180.0, 4.0)], s) == [None, None, "Alert", "Cancel"]


def test_a_free_window_resets_the_run():
    _, alerts = run([6.5, 6.5, 5.9, 6.5, 6.5])
    assert all(a is None for a in alerts)


def test_escalation_to_severe_is_an_update_referencing_the_alert():
    _, alerts = run([6.5, 6.5, 6.5, 8.2])
    raised, update = alerts[2], alerts[3]
    assert update.msg_type == "Update" and update.info[0].severity == "Severe"
    assert update.references == f"citybrain,{raised.identifier},{raised.sent}"
    assert update.incidents == raised.incidents
    assert update.identifier != raised.identifier


def test_tpi_hovering_just_under_the_threshold_does_not_clear():
    # Clearing needs TPI below 6 - 1 = 5 for two windows; 5.5 is inside the margin.
    _, alerts = run([6.5, 6.5, 6.5, 5.5, 5.5, 5.5, 6.1, 5.5])
    assert [a.msg_type for a in alerts if a] == ["Alert"]


def test_clearing_needs_consecutive_calm_windows_below_the_margin():
    _, alerts = run([6.5, 6.5, 6.5, 4.9, 5.5, 4.9, 4.9])
    kinds = [a.msg_type if a else None for a in alerts]
    assert kinds == [None, None, "Alert", None, None, None, "Cancel"]
    assert alerts[6].references == f"citybrain,{alerts[2].identifier},{alerts[2].sent}"
    assert alerts[6].info[0].response_type == "AllClear" and alerts[6].info[0].urgency == "Past"


def test_a_new_episode_gets_a_new_incident():
    watch, first = run([6.5, 6.5, 6.5, 4.0, 4.0])
    _, second = run([6.5, 6.5, 6.5], watch, first_window=5)
    assert first[2].incidents != second[2].incidents


def test_identifiers_are_the_same_on_replay():
    _, a = run([6.5, 6.5, 6.5, 8.5, 4.0, 4.0])
    _, b = run([6.5, 6.5, 6.5, 8.5, 4.0, 4.0])
    assert [x.identifier for x in a if x] == [x.identifier for x in b if x]
    assert len({x.identifier for x in a if x}) == 3


def junction(*approaches, lost=4.0):
    return Intersection("J1", "x", "Z1", list(approaches), lost)


def test_webster_reference_case_y_05_l_16_gives_58_s():
    # Four phases of 4 s lost time each; critical flow ratios adding to 0.5.
    j = junction(*(Approach(f"A{i}", f"S{i}", f"P{i}", 1) for i in range(4)), lost=4.0)
    flows = {f"A{i}": 0.125 * 1800 for i in range(4)}
    plan = webster(j, flows, 0.0, S)
    assert plan.flow_ratio_total == pytest.approx(0.5)
    assert plan.lost_time_s == 16.0
    assert plan.cycle_s == pytest.approx(58.0)
    assert sum(p.green_s for p in plan.phases) == pytest.approx(58.0 - 16.0, abs=0.05)


def test_webster_reference_case_y_07_l_12_gives_77_s():
    j = junction(Approach("N", "S1", "NS", 2), Approach("S", "S2", "NS", 1), Approach("E", "S3", "EW", 1),
                 Approach("W", "S4", "EW", 1), Approach("L", "S5", "LT", 1), lost=4.0)
    # Phase ratios: NS max(0.2, 0.3)=0.3, EW max(0.25, 0.1)=0.25, LT 0.15 -> Y = 0.7.
    flows = {"N": 0.2 * 3600, "S": 0.3 * 1800, "E": 0.25 * 1800, "W": 0.1 * 1800, "L": 0.15 * 1800}
    plan = webster(j, flows, 0.0, S)
    assert plan.flow_ratio_total == pytest.approx(0.7)
    assert plan.cycle_s == pytest.approx(76.67, abs=0.01)
    greens = {p.phase: p.green_s for p in plan.phases}
    assert greens["NS"] == pytest.approx(0.3 / 0.7 * (76.667 - 12), abs=0.01)


def test_webster_cycle_is_clamped_to_the_minimum():
    j = junction(Approach("N", "S1", "NS", 1), Approach("E", "S2", "EW", 1))
    plan = webster(j, {"N": 90, "E": 90}, 0.0, S)
    assert plan.cycle_s == 30.0


def test_webster_cycle_is_clamped_to_the_maximum():
    j = junction(Approach("N", "S1", "NS", 1), Approach("E", "S2", "EW", 1), lost=10.0)
    plan = webster(j, {"N": 0.44 * 1800, "E": 0.44 * 1800}, 0.0, S)
    assert not plan.oversaturated and plan.cycle_s == 180.0


def test_webster_flags_oversaturation_instead_of_a_cycle():
    j = junction(Approach("N", "S1", "NS", 1), Approach("E", "S2", "EW", 1))
    plan = webster(j, {"N": 0.45 * 1800, "E": 0.45 * 1800}, 0.0, S)
    assert plan.oversaturated and plan.cycle_s is None


def test_webster_takes_a_missing_approach_as_zero_and_names_it():
    j = junction(Approach("N", "S1", "NS", 1), Approach("E", "S2", "EW", 1))
    plan = webster(j, {"N": 360}, 0.0, S)
    assert plan.missing == ["E"]
    assert plan.flow_ratio_total == pytest.approx(0.2)


def test_city_index_weights_partitions_by_vehicle_km():
    parts = [CityIndexPart(0, 0.0, 100.0, 100.0 * 8.0, 3, []), CityIndexPart(1, 0.0, 300.0, 300.0 * 2.0, 5, [])]
    index = city_index(0.0, parts)
    assert index.tpi == pytest.approx(3.5)
    assert index.level == "basically_free"
    assert index.segments == 8


def test_a_feed_without_occupancy_leaves_the_windows_occupancy_out():
    from agents.traffic import fold_reading, summarize

    acc = fold_reading(None, TrafficReading("D1", "S1", 0.0, 10, 30.0, 40.0))  # no occupancy measured
    w = summarize(SEGMENT, 0.0, acc, S)
    assert w.occupancy is None and w.flow_vph == 1200.0 and w.speed_kmh == 40.0
    acc = fold_reading(acc, TrafficReading("D2", "S1", 30.0, 10, 30.0, 40.0, 0.4))  # another detector has it
    assert summarize(SEGMENT, 0.0, acc, S).occupancy == 0.4  # over the seconds that measured it, not diluted


def test_a_probe_feeds_sample_gives_speeds_but_no_flow():
    from agents.traffic import fold_reading, summarize

    probes = fold_reading(None, TrafficReading("GPS", "S1", 0.0, 6, 60.0, 15.0, sampled=True))
    w = summarize(SEGMENT, 0.0, probes, S)
    assert (w.flow_vph, w.vehicle_km, w.occupancy) == (None, None, None)
    assert w.speed_kmh == 15.0 and w.level in ("moderate", "severe") and w.vehicles == 6  # congestion is seen
    both = fold_reading(probes, TrafficReading("D1", "S1", 30.0, 20, 30.0, 35.0, 0.3))  # and a loop detector
    w = summarize(SEGMENT, 0.0, both, S)
    assert w.flow_vph == 2400.0 and w.speed_kmh == round((6 * 15.0 + 20 * 35.0) / 26, 3) and w.vehicles == 26


def test_a_window_opened_before_samples_were_told_apart_reads_the_same():
    from agents.traffic import fold_reading, summarize

    reading = TrafficReading("D1", "S1", 0.0, 10, 30.0, 40.0, 0.2)
    four_slots = [10, 400.0, 6.0, 30.0]  # a window saved by the earlier version
    assert summarize(SEGMENT, 0.0, list(four_slots), S) == summarize(SEGMENT, 0.0, fold_reading(None, reading), S)
    assert fold_reading(list(four_slots), reading) == fold_reading(fold_reading(None, reading), reading)


def test_sampled_windows_are_left_out_of_the_citys_weighting_and_a_sampled_approach_is_rejected():
    from agents.traffic import TrafficStage
    from schemas.reference import CityMap
    from streams.tools.harness import run_stage

    other = dataclasses.replace(SEGMENT, segment_id="S2")
    junction = Intersection("J1", "Junction", "Z1", [Approach("J1-N", "S1", "NS", 2)])
    city = CityMap(segments={"S1": SEGMENT, "S2": other}, intersections={"J1": junction})
    t0 = 1_784_534_400.0
    readings = [TrafficReading("GPS", "S1", t0 + 5, 6, 60.0, 15.0, sampled=True),
                TrafficReading("D2", "S2", t0 + 5, 20, 60.0, 45.0, 0.1),
                TrafficReading("GPS", "S1", t0 + 6, 6, 60.0, 15.0, approach_id="J1-N", sampled=True),
                TrafficReading("D2", "S2", t0 + 200, 1, 60.0, 45.0, 0.1),
                TrafficReading("GPS", "S1", t0 + 200, 1, 60.0, 45.0, sampled=True)]  # both partitions move on
    out = run_stage(TrafficStage, [("traffic_readings", r.segment_id, r) for r in readings], city=city,
                    broker_time=t0 + 300, settings=S)
    (dead,) = out.sent("dead_letters")
    assert "signal timing needs every vehicle counted" in dead[1]["reason"]
    parts = [p for _, p in out.sent("city_parts") if p["window_start"] == "2026-07-20T08:00:00.000Z"]
    assert sum(p["segments"] for p in parts) == 2
    assert sum(p["vehicle_km"] for p in parts) == 20 * 2.0  # S2's 20 vehicles a minute over 2 km; S1 has none known
