"""Road cameras: detections corroborate a monitored point, speak against a lone doubtful reading,
and raise a Likely alert alone where no depth sensor is."""

from __future__ import annotations

import orjson

from agents.cameras import CamerasStage, CameraWatch, step_camera
from agents.waterlogging import PointWatch, corroborate, step_point
from schemas.events import CameraDetection, WaterDepthReading
from schemas.records import PointReport
from schemas.reference import CityMap, Segment, WaterloggingPoint, Zone
from streams import topics
from streams.effects import Effects, Source
from streams.reference import Reference
from streams.settings import Settings
from streams.state import Batch

S = Settings()
T0 = 1_784_534_400.0
SEG = Segment("S9", "Dongfeng Rd", "Z1", "arterial", 1.0, 50.0, 2)
ZONE = Zone("Z1", "Jinshui", [])
POINT = WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65, "underpass")


def seen(*detections):
    """(msg_type, depth class) of the alerts a camera's detections raise, in order."""
    watch, out = CameraWatch(), []
    for i, (water, depth, confidence) in enumerate(detections):
        d = CameraDetection("C1", T0 + 60 * i, segment_id="S9", water=water, depth_class=depth, confidence=confidence)
        watch, alert = step_camera(watch, d, SEG, ZONE, S)
        out.append(None if alert is None else (alert.msg_type, alert.parameter("depth_class")))
    return watch, out


def test_detections_weighing_enough_raise_a_likely_alert_where_no_sensor_is():
    _, out = seen((True, "shallow", 0.8), (True, "deep", 0.8))  # 1.6 >= 1.5 within ten minutes
    assert out == [None, ("Alert", "deep")]
    watch, _ = seen((True, "shallow", 0.8), (True, "deep", 0.8))
    assert watch.incident is not None


def test_an_unsure_detection_counts_for_nothing():
    _, out = seen((True, "deep", 0.5), (True, "deep", 0.5), (True, "deep", 0.5), (True, "deep", 0.5))
    assert out == [None, None, None, None]


def test_detections_far_apart_do_not_add_up():
    watch, out = CameraWatch(), []
    for t in (T0, T0 + S.cameras.window_s + 1):
        watch, alert = step_camera(watch, CameraDetection("C1", t, segment_id="S9", depth_class="deep", confidence=0.9),
                                   SEG, ZONE, S)
        out.append(alert)
    assert out == [None, None]


def test_deeper_water_updates_and_clear_views_for_the_clear_time_cancel():
    _, out = seen((True, "shallow", 0.9), (True, "shallow", 0.9), (True, "severe", 0.9), (True, "deep", 0.9),
                  *[(False, "none", 0.9)] * 11)
    kinds = [o for o in out if o]
    assert kinds == [("Alert", "shallow"), ("Update", "severe"), ("Cancel", "severe")]
    assert out.index(("Cancel", "severe")) == 14  # ten minutes of clear views after the first


def test_the_alert_is_likely_and_names_the_road():
    watch, alert = CameraWatch(), None
    for i in range(2):
        watch, alert = step_camera(watch, CameraDetection("C1", T0 + 60 * i, segment_id="S9", depth_class="deep",
                                                          confidence=0.9), SEG, ZONE, S)
    assert alert is not None and alert.info[0].certainty == "Likely" and "Dongfeng Rd" in alert.info[1].headline


def stage() -> tuple[CamerasStage, Effects]:
    ref = Reference(S)
    ref.city.points["P1"] = POINT
    ref.city.segments["S9"] = SEG
    st = CamerasStage(0, S, ref)
    st.restore({})
    return st, Effects("cameras", Batch("cb:{x.0}", 0, {}))


def test_a_camera_at_a_point_reports_to_it_and_an_unsure_one_does_not():
    st, e = stage()
    src = Source("flood.camera_detections", 0, 0, b"C1", b"{}")
    st.on_event(CameraDetection("C1", T0, point_id="P1", depth_class="deep", confidence=0.9), src, e)
    st.on_event(CameraDetection("C1", T0 + 60, point_id="P1", depth_class="deep", confidence=0.3), src, e)
    st.on_event(CameraDetection("C1", T0 + 120, point_id="P1", water=False, confidence=0.9), src, e)
    reports = [orjson.loads(v) for t, _, v, _ in e.sends if t is topics.point_reports]
    assert [(r["point_id"], r["water"]) for r in reports] == [("P1", True), ("P1", False)]


def test_a_camera_detection_confirms_a_doubtful_reading_and_a_clear_view_drops_it():
    watch = PointWatch()
    for i, depth in enumerate([5.0, 12.0, 40.0]):  # up to 40 cm in a zone whose gauges had no rain
        watch, _ = step_point(watch, WaterDepthReading("W1", "P1", T0 + 60 * i, depth), POINT, S, ("dry_zone",))
    assert watch.quality == "doubtful"
    seen_water, alerts = corroborate(watch, PointReport("P1", "camera.C1", T0 + 90, 0.0, True), POINT, S)
    assert [a.parameter("level") for a in alerts] == ["severe"]
    clear, alerts = corroborate(watch, PointReport("P1", "camera.C1", T0 + 90, 0.0, False), POINT, S)
    assert alerts == [] and clear.held is None and clear.level is None
    # The spike, dropped, is confirmed by nothing later: the next ordinary reading is just that.
    after, alerts = step_point(clear, WaterDepthReading("W1", "P1", T0 + 180, 6.0), POINT, S)
    assert alerts == [] and after.quality == "reliable"


def test_a_cameras_recent_detections_survive_a_restart():
    from streams.tools.harness import MemoryState, run_stage

    city = CityMap(segments={"S9": SEG}, zones={"Z1": ZONE})
    state = MemoryState()
    first = [("camera_detections", "C1", CameraDetection("C1", T0, segment_id="S9", depth_class="deep", confidence=0.8))]
    out = run_stage(CamerasStage, first, city=city, state=state, broker_time=T0 + 600)
    assert out.sent("alerts") == []
    second = [("camera_detections", "C1", CameraDetection("C1", T0 + 60, segment_id="S9", depth_class="deep", confidence=0.8))]
    out = run_stage(CamerasStage, first + second, city=city, state=state, broker_time=T0 + 600)  # a restarted worker
    assert [a["msg_type"] for _, a in out.sent("alerts")] == ["Alert"]  # 0.8 + 0.8, the first remembered
