"""Road cameras that see water: at a monitored point a detection corroborates it as a resident's
report does (and a clear view speaks against a lone doubtful reading); at a road with no depth
sensor, detections alone raise a Likely alert.

  flood.camera_detections (by camera) -> cameras -> flood.point_reports (by point), CAP alerts
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from agents.alerts import send_alert
from schemas.cap import Alert, Incident, MsgType, Severity, bilingual, cap_id, road_area
from schemas.contract import Rejected
from schemas.events import CameraDetection
from schemas.records import PointReport
from schemas.reference import Segment, Zone
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import Table

SEVERITY_OF_DEPTH: dict[str, Severity] = {"none": "Minor", "shallow": "Minor", "deep": "Moderate", "severe": "Severe"}
DEPTHS = list(SEVERITY_OF_DEPTH)  # shallowest first


@dataclass(frozen=True, slots=True)
class CameraWatch:
    """A camera at a road with no depth sensor: its recent detections and its incident."""

    seen: list[tuple[float, float]] = field(default_factory=list)  # (detection time, confidence) within the window
    clear_since: float | None = None  # a clear view since, while alerting
    depth_class: str = "none"
    incident: Incident | None = None


def step_camera(
    watch: CameraWatch, d: CameraDetection, segment: Segment, zone: Zone | None, s: Settings
) -> tuple[CameraWatch, Alert | None]:
    """Weigh a detection: sure enough detections within the window raise a Likely alert, sure
    clear views for `clear_s` cancel it; an unsure one counts for nothing."""
    c = s.cameras
    if d.confidence < c.min_confidence:
        return watch, None
    if not d.water:
        if watch.incident is None:
            return (watch if not watch.seen else replace(watch, seen=[])), None
        since = watch.clear_since if watch.clear_since is not None else d.event_time
        if d.event_time - since < c.clear_s:
            return replace(watch, clear_since=since), None
        _, alert = _camera_message(watch, "Cancel", d, segment, zone, s)
        return CameraWatch(), alert
    seen = sorted({t: w for t, w in [*watch.seen, (d.event_time, d.confidence)] if d.event_time - t <= c.window_s}.items())
    watch = replace(watch, seen=seen, clear_since=None)
    if watch.incident is not None:  # deeper water is an Update; shallower waits for the clear view
        if DEPTHS.index(d.depth_class) <= DEPTHS.index(watch.depth_class):
            return watch, None
        return _camera_message(replace(watch, depth_class=d.depth_class), "Update", d, segment, zone, s)
    if sum(w for _, w in seen) < c.raise_weight:
        return watch, None
    incident = Incident(cap_id(f"camera.{d.camera_id}.{int(d.event_time)}"))
    return _camera_message(replace(watch, incident=incident, depth_class=d.depth_class), "Alert", d, segment, zone, s)


def _camera_message(
    watch: CameraWatch, msg_type: MsgType, d: CameraDetection, segment: Segment, zone: Zone | None, s: Settings
) -> tuple[CameraWatch, Alert]:
    cleared = msg_type == "Cancel"
    assert watch.incident is not None  # opened with its first message
    if cleared:
        texts = {"zh-CN": (f"{segment.name}积水已消退", "摄像头显示道路已无积水。", "道路已恢复通行。"),
                 "en-US": (f"Water has cleared on {segment.name}", "The road camera shows the road clear.",
                           "The road is passable again.")}
    else:
        texts = {"zh-CN": (f"{segment.name}摄像头发现积水", f"道路摄像头识别到积水（{watch.depth_class}），此处无水位监测。",
                           "请谨慎通行，积水较深时请绕行。"),
                 "en-US": (f"Camera sees water on {segment.name}",
                           f"A road camera detects water on the road ({watch.depth_class}); no depth sensor here.",
                           "Drive with care; take another route if the water is deep.")}
    parameters = [("segment_id", segment.segment_id), ("zone_id", segment.zone_id), ("camera_id", d.camera_id),
                  ("depth_class", watch.depth_class), ("confidence", f"{d.confidence:.2f}")]
    info = bilingual(texts, "Met", "Road waterlogging (camera)", "AllClear" if cleared else "Avoid",
                     "Past" if cleared else "Immediate", SEVERITY_OF_DEPTH[watch.depth_class],
                     "Likely", parameters, [road_area(segment, zone)])
    incident, alert = watch.incident.message(s.cap, msg_type, d.event_time, info)
    return replace(watch, incident=incident), alert


class CamerasStage(Stage):
    """Per camera: a detection at a monitored point goes to the point as a report would; at a road
    with no depth sensor, the camera's own detections raise and clear a Likely alert."""

    name = "cameras"
    source = "camera_detections"
    contract = CameraDetection
    watch = Table(CameraWatch)

    def gauges(self) -> metrics.Gauges:
        return metrics.gauge("citybrain_active_incidents", sum(1 for w in self.watch.values() if w.incident), "Met")

    def knows(self, d: CameraDetection) -> bool:
        city = self.reference.city
        return (d.point_id is None or d.point_id in city.points) and (d.segment_id is None or d.segment_id in city.segments)

    def on_event(self, d: CameraDetection, source: Source, effects: Effects) -> None:
        city, s = self.reference.city, self.settings
        if d.point_id is not None:
            if d.point_id not in city.points:
                raise Rejected(f"unknown point_id {d.point_id!r}: not in the waterlogging points reference", "unknown_reference")
            if d.confidence >= s.cameras.min_confidence:
                effects.send(topics.point_reports, d.point_id,
                             PointReport(d.point_id, f"camera.{d.camera_id}.{int(d.event_time)}", d.event_time, 0.0, d.water))
            return
        segment = city.segments.get(d.segment_id or "")
        if segment is None:
            raise Rejected(f"camera {d.camera_id} names no known point_id or segment_id", "unknown_reference")
        self.watch[d.camera_id], alert = step_camera(self.watch.get(d.camera_id, CameraWatch()), d, segment,
                                                     city.zones.get(segment.zone_id), s)
        if alert is not None:
            send_alert(alert, effects)


runtime.stage(CamerasStage)
