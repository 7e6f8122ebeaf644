"""Stage rules that need no broker: idle closing, progress reports, signal plan timing."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from agents.rain import RainStage
from agents.traffic import SignalsStage, TrafficStage
from agents.waterlogging import WaterloggingStage
from schemas.contract import Rejected
from schemas.events import RainGaugeReading, TrafficReading, WaterDepthReading
from schemas.records import ApproachFlow, FlowReport
from schemas.reference import Approach, Intersection, RainGauge, Segment, WaterloggingPoint
from streams import topics
from streams.clock import Skew
from streams.effects import Effects, Source
from streams.reference import Reference
from streams.settings import Settings
from streams.state import Batch

S = Settings(partitions=2)
SEG = Segment("S1", "Yan'an Rd", "Z1", "arterial", 1.0, 50.0, 2)
J1 = Intersection("J1", "x", "Z1", [Approach("J1-N", "S1", "NS", 2), Approach("J1-E", "S2", "EW", 1)])


def reference() -> Reference:
    ref = Reference(S)
    ref.city.segments["S1"] = SEG
    ref.city.intersections["J1"] = J1
    ref.approaches = {"J1-N": "J1", "J1-E": "J1"}
    return ref


def effects(stage_name: str) -> Effects:
    return Effects(stage_name, Batch("cb:{x.0}", 0, {}))


def source(offset: int = 0) -> Source:
    return Source("traffic.readings", 0, offset, b"S1", b"{}")


def segment_stage() -> TrafficStage:
    stage = TrafficStage(0, S, reference())
    stage.restore({})
    return stage


def reading(t: float) -> TrafficReading:
    return TrafficReading("D1", "S1", t, 10, 30.0, 40.0, 0.2, "J1-N")


def sent_to(e: Effects, topic) -> list[bytes]:
    return [value for t, _, value, _ in e.sends if t is topic]


def test_a_silent_replay_closes_its_open_windows_but_no_later_ones():
    stage, e = segment_stage(), effects("traffic")
    t = 1_000_020.0
    stage.on_event(reading(t), source(), e)
    stage.on_idle(wall_now=2_000_000_000.0, effects=e)
    stage.flush(e)
    assert stage.windows.open == {}
    assert stage.windows.watermark == stage.windows.closes_at(stage.windows.start_of(t))  # not the wall clock
    assert not stage.windows.is_late(t + 60)  # the next window still takes readings


def test_a_silent_live_partition_moves_with_the_wall_clock_and_reports_it():
    stage, e = segment_stage(), effects("traffic")
    now = 2_000_000_000.0
    stage.on_event(reading(now - 5), source(), e)
    stage.flush(e)
    first_reports = len(sent_to(e, topics.approach_flows))
    stage.on_idle(wall_now=now + 15, effects=e)
    stage.flush(e)
    assert stage.windows.watermark == now + 15
    assert len(sent_to(e, topics.approach_flows)) == first_reports + S.partitions


def signal_stage() -> SignalsStage:
    stage = SignalsStage(0, S, reference())
    stage.restore({})
    return stage


def report(partition: int, final: float, *flows: ApproachFlow) -> FlowReport:
    return FlowReport(partition, final, list(flows))


def test_a_plan_waits_until_every_reporting_partition_has_passed_its_window():
    stage, e = signal_stage(), effects("signals")
    stage.on_event(report(1, -60.0), source(), e)
    stage.on_event(report(0, 0.0, ApproachFlow("J1", "J1-N", 0.0, 600.0)), source(), e)
    stage.flush(e)
    assert sent_to(e, topics.signal_plans) == []  # partition 1 has not passed window 0
    stage.on_event(report(1, 0.0, ApproachFlow("J1", "J1-E", 0.0, 300.0)), source(), e)
    stage.flush(e)
    (plan,) = sent_to(e, topics.signal_plans)
    assert b'"missing":[]' in plan


def test_a_late_flow_revises_a_plan_that_went_out_without_it():
    stage, e = signal_stage(), effects("signals")
    stage.on_event(report(0, 0.0, ApproachFlow("J1", "J1-N", 0.0, 600.0)), source(), e)
    stage.flush(e)
    stage.on_event(report(1, 0.0, ApproachFlow("J1", "J1-E", 0.0, 300.0)), source(), e)
    stage.flush(e)
    first, revised = sent_to(e, topics.signal_plans)
    assert b'"missing":["J1-E"]' in first and b'"missing":[]' in revised


def test_windows_past_revision_stay_closed_when_a_new_partition_reports_low():
    stage, e = signal_stage(), effects("signals")
    far = 100 * S.window_s * S.signals.revision_windows
    stage.on_event(report(0, far), source(), e)
    stage.flush(e)
    stage.on_event(report(1, 0.0, ApproachFlow("J1", "J1-N", 0.0, 600.0)), source(), e)
    stage.flush(e)
    assert sent_to(e, topics.signal_plans) == []
    assert len(sent_to(e, topics.late_events)) == 1


def test_a_live_zone_quiet_for_a_few_minutes_keeps_its_15_minute_window_open():
    from agents.health import ZoneHealthStage
    from schemas.records import ZoneScan

    stage, e = ZoneHealthStage(0, S, reference()), effects("zone_health")
    stage.restore({})
    t = 1_800_000_000.0  # the start of a window
    stage.on_event(ZoneScan("Z1", "scan-1", "red", t + 60), source(), e)
    stage.on_idle(wall_now=t + 300, effects=e)  # five minutes without a scan, well inside the window
    stage.flush(e)
    assert stage.windows.get("Z1", t) == [1, 0, 1]
    assert not stage.windows.is_late(t + 400)
    stage.on_idle(wall_now=t + S.health.window_s + S.health.grace_s, effects=e)  # the window's time is up
    stage.flush(e)
    assert stage.windows.open == {} and stage.watch["Z1"].risky_since is None  # one red scan is no risk


def test_a_sensor_repeating_a_reading_counts_once_in_a_batch_across_batches_and_across_a_restart():
    from schemas.reference import CityMap
    from streams.tools.harness import MemoryState, run_stage

    city = CityMap(segments={"S1": SEG, "S2": replace(SEG, segment_id="S2")}, intersections={"J1": J1})
    t0 = 1_784_534_400.0
    first = [TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2, "J1-N"),
             TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2, "J1-N"),  # resent in the same batch
             TrafficReading("D2", "S1", t0 + 5, 7, 30.0, 40.0, 0.2)]  # another sensor at the same time
    later = [TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2, "J1-N"),  # resent after a restart
             TrafficReading("D1", "S1", t0 + 35, 3, 30.0, 40.0, 0.2, "J1-N"),
             TrafficReading("D1", "S1", t0 + 200, 1, 30.0, 40.0, 0.2)]  # closes the window
    state = MemoryState()
    broker_time = t0 + 300
    run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first], city=city, batch=2, state=state,
              broker_time=broker_time, settings=S)
    seen = [k for k in state.data if ":seen." in k]
    # One field per reading counted in each window it went to (a hash of the window's own): D1 in
    # the segment and its approach, D2.
    assert [k.rsplit(":", 1)[1] for k in seen] == [f"seen.{t0!r}"]
    assert len(state.data[seen[0]]) == 3
    # The restarted worker reads the topic again from its start; what the state applied is skipped.
    out = run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first + later], city=city, batch=1, state=state,
                    broker_time=broker_time, settings=S)
    windows = {w["window_start"]: w for _, w in out.sent("city_parts")}
    segments = [orjson.loads(v) for k, h in state.data.items() if k.endswith(":segments") for v in h.values()]
    assert [w["vehicles"] for w in segments if w["segment_id"] == "S1"] == [20]  # 10 + 7 + 3, the resends not
    assert windows
    # Forgotten with the closed window: only the reading of the window still open is remembered.
    assert {k.rsplit(":", 1)[1]: list(h) for k, h in state.data.items() if ":seen" in k} == {
        f"seen.{t0 + 180!r}": [f"segment:S1|D1@{t0 + 200!r}"]}


def test_a_window_saved_with_its_counted_readings_inside_still_counts_a_resend_once():
    from schemas.reference import CityMap
    from streams.tools.harness import MemoryState, run_stage

    city = CityMap(segments={"S1": SEG})
    t0 = 1_784_534_400.0
    first = [TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2)]
    state = MemoryState()
    run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first], city=city, state=state,
              broker_time=t0 + 300, settings=S)
    # The state as it was saved before counted readings were kept beside their window.
    (seen_key,) = [k for k in state.data if ":seen." in k]
    del state.data[seen_key]
    (open_key,) = [k for k in state.data if k.endswith(":open")]
    (slot,) = state.data[open_key]
    state.data[open_key][slot] = orjson.dumps([*orjson.loads(state.data[open_key][slot]), [f"D1@{t0 + 5!r}"]]).decode()

    later = [TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2),  # resent after the upgrade
             TrafficReading("D1", "S1", t0 + 200, 1, 30.0, 40.0, 0.2)]
    run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first + later], city=city, state=state,
              broker_time=t0 + 300, settings=S)
    segments = [orjson.loads(v) for k, h in state.data.items() if k.endswith(":segments") for v in h.values()]
    assert [w["vehicles"] for w in segments] == [10]


def test_counted_readings_kept_in_one_hash_for_every_window_move_to_their_windows_hashes():
    from schemas.reference import CityMap
    from streams.tools.harness import MemoryState, run_stage

    city = CityMap(segments={"S1": SEG})
    t0 = 1_784_534_400.0
    first = [TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2)]
    state = MemoryState()
    run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first], city=city, state=state,
              broker_time=t0 + 300, settings=S)
    # As the previous version kept them: one hash, each field named by its window's start.
    (window_key,) = [k for k in state.data if ":seen." in k]
    before = window_key.rsplit(":", 1)[0] + ":seen"
    state.data[before] = {f"{t0!r}|{name}": "1" for name in state.data.pop(window_key)}

    later = [TrafficReading("D1", "S1", t0 + 5, 10, 30.0, 40.0, 0.2),  # resent after the upgrade
             TrafficReading("D1", "S1", t0 + 35, 2, 30.0, 40.0, 0.2)]
    run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first + later], city=city, state=state,
              broker_time=t0 + 300, settings=S)
    assert before not in state.data
    assert set(state.data[window_key]) == {f"segment:S1|D1@{t0 + 5!r}", f"segment:S1|D1@{t0 + 35!r}"}
    closing = [TrafficReading("D1", "S1", t0 + 200, 1, 30.0, 40.0, 0.2)]
    run_stage(TrafficStage, [("traffic_readings", "S1", r) for r in first + later + closing], city=city,
              state=state, broker_time=t0 + 300, settings=S)
    segments = [orjson.loads(v) for k, h in state.data.items() if k.endswith(":segments") for v in h.values()]
    assert [w["vehicles"] for w in segments] == [12]  # 10 + 2, the resend not
    assert window_key not in state.data  # dropped with its window


def late_reasons(e: Effects) -> list[str]:
    return [orjson.loads(v)["reason"] for v in sent_to(e, topics.late_events)]


def test_a_depth_reading_the_point_has_moved_past_is_late_and_a_resend_counts_once():
    ref = reference()
    ref.city.points["P1"] = WaterloggingPoint("P1", "Wensan Rd underpass", "Z1", "S1", 30.27, 120.13, "underpass")
    stage, e = WaterloggingStage(0, S, ref), effects("waterlogging")
    stage.restore({})
    for t, depth in ((600.0, 21.0), (600.0, 21.0), (540.0, 30.0), (600.0, 35.0)):
        stage.on_event(WaterDepthReading("W1", "P1", t, depth), source(), e)
    assert stage.watch["P1"].depth_cm == 21.0 and stage.watch["P1"].level == "warning"
    assert late_reasons(e) == ["late: point P1 has a reading of 1970-01-01T00:10:00.000Z already"] * 2


def test_a_rain_reading_past_the_longest_horizon_or_at_a_counted_time_is_late():
    ref = reference()
    ref.city.gauges["G1"] = RainGauge("G1", "Z1", 30.27, 120.13)
    stage, e = RainStage(0, S, ref), effects("rain")
    stage.restore({})
    t = 100_000.0
    for at, mm in ((t, 5.0), (t, 5.0), (t, 7.0), (t - 12 * 3600, 3.0), (t - 3600, 2.0)):
        stage.on_event(RainGaugeReading("G1", at, mm, 300.0), source(), e)
    assert dict(stage.history["G1"]) == {t: 5.0, t - 3600: 2.0}
    assert len(sent_to(e, topics.gauge_rain)) == 2
    assert late_reasons(e) == [
        "late: gauge G1 has a reading for 1970-01-02T03:46:40.000Z already",
        "late: older than the longest horizon (12 h) before gauge G1's newest reading",
    ]


def three_segments() -> TrafficStage:
    ref = reference()
    for s in ("S2", "S3"):
        ref.city.segments[s] = replace(SEG, segment_id=s)
    stage = TrafficStage(0, S, ref)
    stage.restore({})
    return stage


def at(segment: str, t: float, broker: float | None = None) -> tuple[TrafficReading, Source]:
    return (TrafficReading("D-" + segment, segment, t, 10, 30.0, 40.0, 0.2),
            Source("traffic.readings", 0, 0, segment.encode(), b"{}", broker))


def dead_reasons(e: Effects) -> list[str]:
    return [orjson.loads(v)["reason"] for v in sent_to(e, topics.dead_letters)]


def test_one_clock_a_day_ahead_is_dead_lettered_and_moves_no_one_else_late():
    stage, e = three_segments(), effects("traffic")
    t = 1_000_020.0
    for i in range(10):
        for segment in ("S1", "S2", "S3"):
            if (segment, i) == ("S3", 4):
                stage.on_event(*at("S3", t + 86_400 + 30 * i), e)  # its clock runs a day ahead
            else:
                stage.on_event(*at(segment, t + 30 * i), e)
    assert stage.windows.watermark == t + 270
    assert late_reasons(e) == []
    (reason,) = dead_reasons(e)
    assert reason == ("event_time 1970-01-13T13:49:00.000Z of segment:S3 is 86,400 s ahead of its partition's "
                      "time 1970-01-12T13:49:00.000Z, and no other sensor is: a clock that runs wrong")
    # What it remembers of the wild clock is saved with the watermark, for a restarted worker.
    stage.end_batch(e)
    (meta,) = [c for c in e.batch.commands if c[:2] == ["HSET", "cb:{x.0}:meta"]]
    saved = {k: v.encode() for k, v in zip(meta[2::2], meta[3::2])}
    restored = three_segments()
    restored.load({"meta": saved})
    assert restored.skew.ahead == {"segment:S3": t + 86_520} and restored.windows.watermark == t + 270


def test_a_jump_two_sensors_agree_on_or_the_broker_saw_pass_moves_the_watermark():
    stage, e = three_segments(), effects("traffic")
    t, gap = 1_000_020.0, 8 * 3600.0  # a recording with a night in it
    for segment in ("S1", "S2"):
        stage.on_event(*at(segment, t), e)
    stage.on_event(*at("S1", t + gap), e)  # alone, with S2's window open: held for a wild clock
    stage.on_event(*at("S2", t + gap + 30), e)  # S2 agrees: the partition's time did jump
    assert stage.windows.watermark == t + gap + 30 and len(dead_reasons(e)) == 1
    live, e = three_segments(), effects("traffic")
    for segment in ("S1", "S2"):
        live.on_event(*at(segment, t, broker=t), e)
    live.on_event(*at("S1", t + gap, broker=t + gap), e)  # a live feed that paused overnight
    assert live.windows.watermark == t + gap and dead_reasons(e) == []


def test_a_depth_sensor_a_day_ahead_is_dead_lettered_and_its_neighbours_are_not_made_stale():
    ref = reference()
    for p in ("P1", "P2"):
        ref.city.points[p] = WaterloggingPoint(p, f"point {p}", "Z1", None, 30.27, 120.13, "underpass")
    stage, e = WaterloggingStage(0, S, ref), effects("waterlogging")
    stage.restore({})
    t = 1_000_020.0
    for i in range(5):
        for p in ("P1", "P2"):
            reading = WaterDepthReading("W-" + p, p, t + 60 * i, 5.0)
            if (p, i) == ("P2", 2):  # its clock jumps a day ahead for one reading
                with pytest.raises(Rejected, match="a clock that runs wrong"):
                    stage.on_event(replace(reading, event_time=reading.event_time + 86_400), source(), e)
            else:
                stage.on_event(reading, source(), e)
    stage.flush(e)
    assert stage.clock == t + 240 and stage.watch["P2"].updated == t + 240
    assert {w.health for w in stage.watch.values()} == {"ok"} and late_reasons(e) == []
    assert stage.skew.ahead == {"P2": t + 120 + 86_400}



def test_signal_state_kept_by_the_previous_version_is_carried_over():
    """Each traffic partition's final window and the pruning horizon were one `upstream` hash: a
    plan must still wait for the partition that is behind after an upgrade."""
    stage = SignalsStage(0, S, reference())
    stage.load({"upstream": {"pruned": b"-3600.0", "0": b"-60.0", "1": b"-60.0"},
                "windows": {"0.0|J1": b'{"flows":{"J1-N":600.0},"sent":false}'}})
    assert dict(stage.upstream) == {0: -60.0, 1: -60.0} and stage.pruned == -3600.0
    e = effects("signals")
    stage.on_event(report(0, 0.0), source(), e)
    stage.end_batch(e)
    assert sent_to(e, topics.signal_plans) == []  # partition 1 has not passed window 0
    assert ["HSET", "cb:{x.0}:final_through", "0", "0.0", "1", "-60.0"] in e.batch.commands


def test_a_skew_record_kept_by_the_previous_version_is_carried_over():
    stage = three_segments()
    stage.load({"meta": {"watermark": b"1000.0", "clock_moved_at": b"1700000000.5", "ahead": b'{"segment:S3":90000.0}'}})
    assert stage.skew == Skew(1_700_000_000.5, {"segment:S3": 90_000.0}) and stage.windows.watermark == 1000.0
    fresh = three_segments()
    fresh.load({"meta": {"clock_moved_at": b"-inf"}})
    assert fresh.skew == Skew(None, {})


def test_a_windowed_stage_reading_a_topic_alongside_without_a_rule_for_it_fails_loudly():
    from schemas.records import RoadClosure
    from streams.effects import RuleFailed, Sources
    from streams.windowed import WindowedStage

    class Forgetful(TrafficStage):
        on_event = WindowedStage.on_event  # no rule of its own for a road closure

    stage, e = Forgetful(0, S, reference()), effects("traffic")
    stage.restore({})
    with pytest.raises(RuleFailed) as failed:
        stage.on_batch([RoadClosure("S1", "P1", True, 1_000_020.0, 30.0)], Sources.of([source()]), e)
    assert isinstance(failed.value.__cause__, TypeError)


@pytest.mark.parametrize("open_field", ["1784534400.0|segment:S1", "1784534400|segment:S1"])
def test_a_partition_reads_the_counted_readings_of_its_open_windows_by_the_name_it_writes(open_field):
    t0 = 1_784_534_400.0
    assert TrafficStage.hashes_after({"open": {open_field: b"[]"}}) == (f"seen.{t0!r}",)


def two_gauges() -> tuple[RainStage, Effects]:
    """The rain stage of a partition holding two gauges of zone Z1."""
    ref = reference()
    for g in ("G1", "G2"):
        ref.city.gauges[g] = RainGauge(g, "Z1", 30.27, 120.13)
    stage = RainStage(0, S, ref)
    stage.restore({})
    return stage, effects("rain")


def test_a_gauge_behind_its_partitions_newest_reading_by_gauge_silent_s_is_announced_silent_once():
    from schemas.contract import iso
    from schemas.records import GaugeRain

    stage, e = two_gauges()
    t, silent_s = 100_000.0, S.rain.gauge_silent_s
    stage.on_event(RainGaugeReading("G1", t, 30.0, 300.0), source(), e)
    for at in (t, t + silent_s - 1, t + silent_s, t + silent_s + 300):
        stage.on_event(RainGaugeReading("G2", at, 0.0, 300.0), source(), e)
    updates = [GaugeRain(**orjson.loads(v)) for v in sent_to(e, topics.gauge_rain)]
    assert [(u.gauge_id, u.as_of) for u in updates if not u.reporting] == [("G1", iso(t + silent_s))]
    assert updates[-1].reporting and updates[-1].gauge_id == "G2"


def test_a_silent_gauge_no_longer_holds_its_zones_signal_and_a_zone_with_none_left_says_so():
    from agents.rain import ZoneRainStage
    from schemas.records import GaugeRain

    stage, e = ZoneRainStage(0, S, reference()), effects("zone_rain")
    stage.restore({})
    t = 100_000.0
    heavy, dry = [60.0, 120.0, 120.0, 120.0], [0.0, 0.0, 0.0, 0.0]
    stage.on_event(GaugeRain("G1", "Z1", t, heavy), source(), e)
    stage.on_event(GaugeRain("G2", "Z1", t, dry), source(), e)
    assert stage.signal["Z1"].colour == "red"
    stage.on_event(GaugeRain("G1", "Z1", t + 1800, [], reporting=False), source(), e)
    for at in (t + 2100, t + 2100 + S.rain.hold_s):
        stage.on_event(GaugeRain("G2", "Z1", at, dry), source(), e)
    assert stage.signal["Z1"].colour is None  # G1's last totals held it red while counted
    assert stage.zones["Z1"]["gauges_reporting"] == 1 and stage.zones["Z1"]["gauges_silent"] == 1
    stage.on_event(GaugeRain("G2", "Z1", t + 9000, [], reporting=False), source(), e)
    assert stage.zones["Z1"]["gauges_reporting"] == 0
    assert stage.gauges()["citybrain_rain_zones_unmonitored"] == {(): 1.0}
    stage.on_event(GaugeRain("G1", "Z1", t + 9300, heavy), source(), e)  # back, with rain
    assert stage.signal["Z1"].colour == "red" and stage.zones["Z1"]["gauges_reporting"] == 1


def test_a_single_spike_closes_no_road_and_tells_no_zone():
    ref = reference()
    ref.city.points["P1"] = WaterloggingPoint("P1", "Underpass", "Z1", "S1", 30.27, 120.13, "underpass")
    stage, e = WaterloggingStage(0, S, ref), effects("waterlogging")
    stage.restore({})
    t = 1_784_534_400.0
    for i, depth in enumerate((5.0, 120.0, 5.0)):
        stage.on_event(WaterDepthReading("W1", "P1", t + 60 * i, depth), source(i), e)
    assert sent_to(e, topics.closures) == [] and sent_to(e, topics.zone_floods) == [] and sent_to(e, topics.alerts) == []
    stage.flush(e)
    assert stage.points["P1"]["quality"] == "reliable"
    # The same spike read twice, consistently: a real rise, and the road closes.
    for i, depth in enumerate((120.0, 122.0), start=3):
        stage.on_event(WaterDepthReading("W1", "P1", t + 60 * i, depth), source(i), e)
    assert [orjson.loads(v)["closed"] for v in sent_to(e, topics.closures)] == [True]
    assert len(sent_to(e, topics.zone_floods)) == 1


def test_a_late_reading_of_a_gauge_gone_silent_leaves_it_silent():
    from schemas.records import GaugeRain

    stage, e = two_gauges()
    t, silent_s = 100_000.0, S.rain.gauge_silent_s
    stage.on_event(RainGaugeReading("G1", t, 30.0, 300.0), source(), e)
    stage.on_event(RainGaugeReading("G2", t + silent_s + 600, 0.0, 300.0), source(), e)
    stage.on_event(RainGaugeReading("G1", t + 300, 30.0, 300.0), source(), e)  # buffered, sent late
    last = GaugeRain(**orjson.loads(sent_to(e, topics.gauge_rain)[-1]))
    assert (last.gauge_id, last.reporting, last.totals_mm) == ("G1", False, [])


def test_a_zone_with_every_gauge_silent_tells_its_points_the_rain_is_not_known():
    from agents.rain import ZoneRainStage
    from schemas.records import GaugeRain, PointRain

    ref = reference()
    ref.city.points["P1"] = WaterloggingPoint("P1", "Underpass", "Z1", None, 30.27, 120.13, "underpass")
    stage, e = ZoneRainStage(0, S, ref), effects("zone_rain")
    stage.restore({})
    t = 100_000.0
    stage.on_event(GaugeRain("G1", "Z1", t, [20.0, 20.0, 20.0, 20.0]), source(), e)
    stage.on_event(GaugeRain("G1", "Z1", t + 1800, [], reporting=False), source(), e)
    told = [PointRain(**orjson.loads(v)) for v in sent_to(e, topics.point_rain)]
    assert [(p.rain_mm_h, p.known) for p in told] == [(20.0, True), (0.0, False)]
