"""Waterlogging at monitored low points: each point's depth, level, rise and sensor health, and
the CAP alerts on crossing a line, rising fast, and a sensor gone faulty, stuck or silent.

  flood.water_depths (by point), with flood.point_reports, flood.point_rain and
  flood.point_neighbours (each point's water, told to the points around it) -> waterlogging
"""

from __future__ import annotations

import logging
import math
from collections import Counter as Tally
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agents.alerts import send_alert
from agents.flood import LEVELS, POINT_RADIUS_KM, SEVERITY, rank, waterlogging_level
from agents.nowcast import Outlook, Response, forecast, learn, step_outlook, trend_cm_h, withdraw
from schemas.cap import Alert, Incident, MsgType, bilingual, cap_id, circle_area
from schemas.contract import Rejected, iso, parse_time
from schemas.events import WaterDepthReading
from schemas.records import PointNeighbour, PointRain, PointReport, RoadClosure, ZoneFlood
from schemas.reference import WaterloggingPoint, distance_m
from streams import metrics, runtime, topics
from streams.clock import Skew, is_live
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import GroupedTable, Table, Value

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Rules (pure)


@dataclass(frozen=True, slots=True)
class PointWatch:
    """What the city brain remembers of one monitored point."""

    level: str | None = None  # the level under alert
    rising: bool = False  # alerting because of a fast rise
    below_since: float | None = None  # when the depth fell under the current level's clearing line
    incident: Incident | None = None
    history: list[tuple[float, float]] = field(default_factory=list)  # accepted (t, depth) within the rise window
    same_since: float | None = None  # since when the depth has stayed within the flat band of flat_depth
    flat_depth: float | None = None
    health: str = "ok"  # ok, faulty, stuck or stale
    # The newest reading's quality flag (reliable, doubtful, unreliable) and the check that set it
    # (QUALITY_CHECKS), or what confirmed a doubtful one (second_reading, resident_report).
    quality: str = "reliable"
    quality_check: str | None = None
    held: tuple[float, float] | None = None  # a doubtful reading (t, depth) that sets nothing off until confirmed
    health_incident: Incident | None = None
    depth_cm: float | None = None
    updated: float | None = None
    reported_at: float | None = None  # the latest resident's report near the point
    corroborated: bool = False  # the incident is confirmed by a resident's report


def rise_cm(history: list[tuple[float, float]], t: float, depth: float, s: Settings) -> float:
    """How far the water rose within the rise window up to t."""
    recent = [d for when, d in history if t - when <= s.waterlogging.rise_window_s]
    return depth - min(recent, default=depth)


QUALITY_CHECKS = ("hard_limit", "flat_line", "soft_limit", "rate_of_rise", "rate_of_fall", "dry_zone", "neighbours_dry")
RATE_CHECKS = ("rate_of_rise", "rate_of_fall")  # a jump only a second reading can confirm
CONFIRMED_BY = {"second_reading": ("经第二次读数确认。", "Confirmed by a second reading."),
                "resident_report": ("经市民报告确认。", "Confirmed by a resident's report.")}


def too_fast(before: tuple[float, float] | None, t: float, depth: float, s: Settings) -> str | None:
    """The rate check a reading fails after the reading `before` (t, depth), or None: water does
    not rise or drain faster than the limits, whatever a sensor's spike says."""
    if before is None:
        return None
    rate = (depth - before[1]) / (max(t - before[0], 60.0) / 60)  # cm a minute, over a minute at least
    w = s.waterlogging
    return "rate_of_rise" if rate > w.max_rise_cm_per_min else "rate_of_fall" if -rate > w.max_fall_cm_per_min else None


def doubt(watch: PointWatch, t: float, depth: float, s: Settings, dry_around: tuple[str, ...] = ()) -> str | None:
    """The check that makes a plausible reading doubtful (past the soft limit, too fast after the
    point's last accepted reading, or water coming up to the watch line while what is around the
    point says it is dry: `dry_around`), or None: it is reliable."""
    last = watch.history[-1] if watch.history else None
    soft = s.waterlogging.depth_soft_max_cm
    if depth > soft and (last is None or last[1] <= soft):  # past it on the way up; beyond, the rate decides
        return "soft_limit"
    if dry_around and comes_up_to_watch(watch, depth, s):
        return dry_around[0]
    return too_fast(last, t, depth, s)


def comes_up_to_watch(watch: PointWatch, depth: float, s: Settings) -> bool:
    """Whether a depth brings the point's water up to the watch line from below it."""
    line = s.waterlogging.levels_cm[0]
    return depth >= line and (not watch.history or watch.history[-1][1] < line)


def water_of(watch: PointWatch, s: Settings) -> str | None:
    """A point's water as its neighbours weigh it: dry or wet by its last accepted reading,
    unknown while its sensor is at fault or it has none accepted; None before any reading."""
    if watch.updated is None:
        return None
    if watch.health != "ok" or not watch.history:
        return "unknown"
    return "dry" if watch.history[-1][1] < s.waterlogging.neighbour_dry_cm else "wet"


def neighbours_dry(told: Mapping[str, PointNeighbour], s: Settings) -> bool:
    """Whether enough of a point's neighbours report no water at all, and none reports any."""
    known = [n.water for n in told.values() if n.water != "unknown"]
    return len(known) >= s.waterlogging.neighbours_min and all(w == "dry" for w in known)


def neighbours_of(point: WaterloggingPoint, points: Mapping[str, WaterloggingPoint], s: Settings) -> list[str]:
    """The monitored points within `neighbour_radius_m` of a point."""
    return sorted(p.point_id for p in points.values() if p.point_id != point.point_id
                  and distance_m(point.lat, point.lon, p.lat, p.lon) <= s.waterlogging.neighbour_radius_m)


def confirmation(watch: PointWatch, check: str, t: float, depth: float, s: Settings) -> str | None:
    """What confirms a reading doubtful by `check`: the doubtful one before it, if recent and
    consistent with it, or (for a depth that is merely unusual, not a jump no water makes) a
    resident's report near the point within the report window; None: nothing does yet."""
    held = watch.held
    if held is not None and t - held[0] <= s.waterlogging.sensor_silent_s and too_fast(held, t, depth, s) is None:
        return "second_reading"
    if check not in RATE_CHECKS and watch.reported_at is not None and abs(t - watch.reported_at) <= s.reports.window_s:
        return "resident_report"
    return None


def superseded(watch: PointWatch, r: WaterDepthReading) -> str | None:
    """Whether the point's newer state stands against the reading: "repeat" for the reading it
    has (its sensor sent it again), "late" for an older one or another depth at the same time."""
    if watch.updated is None or r.event_time > watch.updated:
        return None
    return "repeat" if r.event_time == watch.updated and r.depth_cm == watch.depth_cm else "late"


def step_point(watch: PointWatch, r: WaterDepthReading, point: WaterloggingPoint, s: Settings,
               dry_around: tuple[str, ...] = ()) -> tuple[PointWatch, list[Alert]]:
    """Fold one depth reading into a point: sensor health and the reading's quality first, then
    the waterlogging alert. A doubtful reading is kept and shown, and sets nothing off.
    `dry_around`: what around the point says it is dry: dry_zone (the zone's gauges have
    measured no rain in the last hour), neighbours_dry (the points around it have no water)."""
    if superseded(watch, r):
        return watch, []
    alerts: list[Alert] = []
    w = s.waterlogging
    flat = watch.flat_depth is not None and watch.same_since is not None and abs(r.depth_cm - watch.flat_depth) <= w.flat_band_cm
    check: str | None
    if not 0 <= r.depth_cm <= w.depth_max_plausible_cm:
        health, check = "faulty", "hard_limit"
    elif flat and watch.flat_depth > w.flat_band_cm and r.event_time - watch.same_since >= w.sensor_stuck_s:  # type: ignore[operator]
        health, check = "stuck", "flat_line"
    else:
        health, check = "ok", doubt(watch, r.event_time, r.depth_cm, s, dry_around)
    same_since, flat_depth = (watch.same_since, watch.flat_depth) if flat else (r.event_time, r.depth_cm)
    watch = replace(watch, same_since=same_since, flat_depth=flat_depth, depth_cm=r.depth_cm, updated=r.event_time)
    if health != watch.health:
        watch, alert = _health_change(watch, health, r.event_time, point, s)
        alerts.append(alert)
    if health != "ok":  # a faulty or stuck sensor says nothing about the water
        return replace(watch, quality="unreliable", quality_check=check, held=None), alerts
    confirmed = None if check is None else confirmation(watch, check, r.event_time, r.depth_cm, s)
    if check is not None and confirmed is None:
        return replace(watch, quality="doubtful", quality_check=check, held=(r.event_time, r.depth_cm)), alerts
    return step_level(replace(watch, quality="reliable", quality_check=confirmed, held=None), r, point, s, alerts)


def step_level(
    watch: PointWatch, r: WaterDepthReading, point: WaterloggingPoint, s: Settings, alerts: list[Alert]
) -> tuple[PointWatch, list[Alert]]:
    """Step the point's alert with an accepted reading: up at once, down after the hold."""
    rise = rise_cm(watch.history, r.event_time, r.depth_cm, s)
    recent = [(t, d) for t, d in watch.history if r.event_time - t <= s.waterlogging.rise_window_s]
    history = [*recent, (r.event_time, r.depth_cm)]
    watch = replace(watch, history=history)
    level = waterlogging_level(r.depth_cm, s)
    rising = rise >= s.waterlogging.rise_alert_cm
    target = level or ("watch" if rising else None)
    if rank(target) > rank(watch.level):
        msg: MsgType = "Alert" if watch.level is None else "Update"
        incident = watch.incident or Incident(cap_id(f"waterlogging.{point.point_id}.{int(r.event_time)}"))
        corroborated = watch.corroborated or (
            watch.reported_at is not None and r.event_time - watch.reported_at <= s.reports.window_s)
        watch = replace(watch, level=target, rising=rising, below_since=None, incident=incident, corroborated=corroborated)
        return _waterlogging_message(watch, msg, r, rise, point, s, alerts)
    if watch.level is None:
        return watch, alerts
    # Coming down: only once under (line - margin) for the hold time, to the level the depth is at.
    line = s.waterlogging.levels_cm[LEVELS.index(watch.level)]
    if r.depth_cm >= line - s.waterlogging.clear_margin_cm or rising:
        return replace(watch, below_since=None), alerts
    below_since = watch.below_since if watch.below_since is not None else r.event_time
    if r.event_time - below_since < s.waterlogging.hold_s:
        return replace(watch, below_since=below_since), alerts
    lower = level if level is not None and rank(level) < rank(watch.level) else None
    if lower is None:
        watch = replace(watch, level=None, rising=False, below_since=None)
        watch, alerts = _waterlogging_message(watch, "Cancel", r, rise, point, s, alerts)
        return replace(watch, incident=None, corroborated=False), alerts
    watch = replace(watch, level=lower, rising=False, below_since=None)
    return _waterlogging_message(watch, "Update", r, rise, point, s, alerts)


WATER_TEXT = {
    "watch": ("积水关注", "Water on the road", "请注意低洼路段积水，谨慎通行。", "Drive slowly and watch for standing water."),
    "warning": ("积水预警", "Waterlogging warning", "积水已超过黄线，请避开该路段。",
                "Water is over the yellow line: avoid this road."),
    "closure": ("积水封路", "Road closed by waterlogging", "积水已达封路深度，请勿驶入，尽快将车辆驶离地下车库等低洼处。",
                "The road is closed: do not drive in, and move vehicles out of underground garages and underpasses."),
    "severe": ("严重积水", "Severe waterlogging", "积水严重，车辆和行人请勿靠近，远离涵洞、下穿通道和地下空间。",
               "Severe flooding: keep vehicles and people away; stay out of culverts, underpasses and underground spaces."),
}


def _waterlogging_message(
    watch: PointWatch, msg_type: MsgType, r: WaterDepthReading, rise: float, point: WaterloggingPoint, s: Settings,
    alerts: list[Alert],
) -> tuple[PointWatch, list[Alert]]:
    cleared = msg_type == "Cancel"
    level = watch.level or "watch"
    zh_head, en_head, zh_do, en_do = WATER_TEXT[level]
    if cleared:
        zh_head, en_head = "积水已消退", "Waterlogging has cleared"
        zh_do, en_do = "道路已恢复通行。", "The road is passable again."
    rising = " and rising fast" if watch.rising and not cleared else ""
    zh_checked, en_checked = CONFIRMED_BY.get(watch.quality_check or "", ("", ""))
    texts = {
        "zh-CN": (f"{point.name}{zh_head}",
                  f"{point.name}积水深度{r.depth_cm:.0f}厘米（{iso(r.event_time)}）。{zh_checked}", zh_do),
        "en-US": (f"{en_head} at {point.name}", f"Water at {point.name} is {r.depth_cm:.0f} cm deep{rising} "
                                                f"({rise:+.0f} cm in {s.waterlogging.rise_window_s / 60:.0f} min)."
                                                + (f" {en_checked}" if en_checked else ""), en_do),
    }
    parameters = [("point_id", point.point_id), ("zone_id", point.zone_id), ("level", "cleared" if cleared else level),
                  ("depth_cm", f"{r.depth_cm:.1f}"), ("rise_cm", f"{rise:.1f}"),
                  ("reading_quality", watch.quality), ("quality_check", watch.quality_check or "passed")]
    if point.segment_id:
        parameters.append(("segment_id", point.segment_id))
    area = circle_area(f"{point.name} ({point.kind.replace('_', ' ')})", point.lat, point.lon, POINT_RADIUS_KM)
    info = bilingual(texts, "Met", "Road waterlogging", "AllClear" if cleared else ("Monitor" if level == "watch" else "Avoid"),
                     "Past" if cleared else "Immediate", SEVERITY[level], "Observed" if watch.corroborated else "Possible",
                     parameters, [area])
    assert watch.incident is not None  # opened with its first message
    incident, alert = watch.incident.message(s.cap, msg_type, r.event_time, info)
    return replace(watch, incident=incident), [*alerts, alert]


def corroborate(watch: PointWatch, report: PointReport, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, list[Alert]]:
    """A resident's report near the point: a doubtful reading the point holds is confirmed and
    goes as if it had just come in; an open incident becomes Observed (an Update); with none
    open, the report confirms an incident raised within the report window. A camera's clear view
    is evidence against a lone doubtful reading: it is dropped, never to be confirmed."""
    near = watch.held is not None and abs(watch.held[0] - report.at) <= s.reports.window_s
    if not report.water:
        return (replace(watch, held=None) if near else watch), []
    watch = replace(watch, reported_at=max(report.at, watch.reported_at or report.at))
    alerts: list[Alert] = []
    if near and watch.held is not None and watch.health == "ok" and watch.quality_check not in RATE_CHECKS:
        t, depth = watch.held
        held = replace(watch, quality="reliable", quality_check="resident_report", held=None)
        watch, alerts = step_level(held, WaterDepthReading("held", point.point_id, t, depth), point, s, alerts)
    if watch.level is None or watch.corroborated:
        return watch, alerts
    watch = replace(watch, corroborated=True)
    if watch.health != "ok":
        return watch, alerts  # no depth worth publishing; the next good reading goes out as Observed
    as_of = WaterDepthReading("report", point.point_id, max(report.at, watch.updated or report.at), watch.depth_cm or 0.0)
    return _waterlogging_message(watch, "Update", as_of, rise_cm(watch.history, as_of.event_time, as_of.depth_cm, s),
                                 point, s, alerts)


def silent_points(watches: Mapping[str, PointWatch], now: float, s: Settings) -> list[str]:
    """Points whose sensor has said nothing for `sensor_silent_s` by `now`: stale, not dry."""
    return sorted(p for p, w in watches.items()
                  if w.health == "ok" and w.updated is not None and now - w.updated >= s.waterlogging.sensor_silent_s)


def mark_stale(watch: PointWatch, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, Alert]:
    """The point's sensor went silent: stale from the moment the silence grew too long (the same
    moment however the readings around it were batched)."""
    assert watch.updated is not None  # silent after a reading
    return _health_change(replace(watch, held=None), "stale", watch.updated + s.waterlogging.sensor_silent_s, point, s)


def _health_change(watch: PointWatch, health: str, t: float, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, Alert]:
    """An operational alert when a point's sensor goes faulty or stuck, cancelled when it recovers."""
    recovered = health == "ok"
    incident = watch.health_incident or Incident(cap_id(f"sensor.{point.point_id}.{int(t)}"))
    what = {"faulty": ("reports impossible depths", "读数异常"), "stuck": ("is stuck at one value", "读数停滞"),
            "stale": ("has stopped reporting", "停止上报")}.get(health)
    en = f"Depth sensor at {point.name} " + (f"{what[0]}: the point is not monitored" if what else "reports normally again")
    zh = f"{point.name}水位传感器" + (f"{what[1]}，该点暂无有效监测" if what else "恢复正常")
    texts = {"zh-CN": (zh, zh, "请运维人员检查传感器。"),
             "en-US": (en, en, "Maintenance to inspect the sensor.")}
    info = bilingual(texts, "Infra", "Waterlogging sensor fault", "AllClear" if recovered else "Assess",
                     "Past" if recovered else "Expected", "Minor", "Observed",
                     [("point_id", point.point_id), ("zone_id", point.zone_id), ("sensor_health", health)],
                     [circle_area(point.name, point.lat, point.lon, POINT_RADIUS_KM)])
    msg_type: MsgType = "Cancel" if recovered else ("Alert" if watch.health_incident is None else "Update")
    after, alert = incident.message(s.cap, msg_type, t, info, operational=True)
    return replace(watch, health=health, health_incident=None if recovered else after), alert


# ---------------------------------------------------------------------------------------------
# Stage


class WaterloggingStage(Stage):
    """Per monitored point: depth, level, rise and sensor health; alerts on the way up and down."""

    name = "waterlogging"
    source = "water_depths"
    contract = WaterDepthReading
    alongside = {"point_reports": PointReport, "point_rain": PointRain, "point_neighbours": PointNeighbour}
    watch = Table(PointWatch)
    told = GroupedTable(PointNeighbour)  # by (point, neighbour): the neighbour's water, as last told
    outlook = Table(Outlook)  # per point: its nowcast (agents/nowcast.py)
    points = Table(dict, restored=False)  # the live view of each point
    skew = Value(Skew, Skew())

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.skew = Skew.kept_before(hashes.get("meta", {})) or self.skew
        # The partition's event time: the newest reading of any of its points.
        self.clock = max((w.updated for w in self.watch.values() if w.updated is not None), default=-math.inf)

    def knows(self, r: WaterDepthReading | PointReport) -> bool:
        return r.point_id in self.reference.city.points

    def on_event(self, r: WaterDepthReading | PointReport | PointRain | PointNeighbour, source: Source,
                 effects: Effects) -> None:
        if isinstance(r, PointRain):
            return self.on_rain(r, effects)
        if isinstance(r, PointNeighbour):
            before_told = self.told.get((r.point_id, r.neighbour_id))
            if before_told is None or before_told.at <= r.at:  # an older word, resent or late, changes nothing
                self.told[r.point_id, r.neighbour_id] = r
            return
        if isinstance(r, PointReport):
            point = self.reference.city.points.get(r.point_id)
            if point is not None:
                before = self.watch.get(r.point_id, PointWatch())
                self._changed(point, before, *corroborate(before, r, point, self.settings), effects)
            return
        point = self.reference.city.points.get(r.point_id)
        if point is None:
            raise Rejected(f"unknown point_id {r.point_id!r}: not in the waterlogging points reference", "unknown_reference")
        before = self.watch.get(r.point_id, PointWatch())
        if r.event_time > self.clock:
            alone = lambda: all(p == r.point_id for p, w in self.watch.items() if w.updated is not None)  # noqa: E731
            if not self.skew.allows(r.point_id, r.event_time, self.clock, source, self.settings.max_skew_s, alone):
                raise Skew.wild(r.point_id, r.event_time, self.clock)
            self.clock = r.event_time
        past = superseded(before, r)
        if past == "repeat":
            effects.repeated()
            return
        if past == "late":
            effects.late(source, f"late: point {r.point_id} has a reading of {iso(before.updated)} already")
            return
        watch, alerts = step_point(before, r, point, self.settings, self.dry_around(point, before, r.depth_cm))
        if watch.quality == "doubtful" and before.held != watch.held:
            metrics.READINGS_DOUBTFUL.labels(watch.quality_check).inc()
        self._changed(point, before, watch, alerts, effects)
        if watch.health != "ok":
            self.withdraw(point, r.event_time, effects)
        elif watch.history and watch.history[-1] == (r.event_time, r.depth_cm):  # accepted: it teaches, moves the forecast
            self.look_ahead(point, watch, r.event_time, effects, before.history[-1] if before.history else None)

    def dry_around(self, point: WaterloggingPoint, watch: PointWatch, depth: float) -> tuple[str, ...]:
        """What around the point says it is dry (`step_point`), asked of water coming up to the
        watch line only: the zone's rain as its gauges tell it, and the points now within reach."""
        s = self.settings
        if not comes_up_to_watch(watch, depth, s):
            return ()
        outlook = self.outlook.get(point.point_id)
        dry_zone = outlook is not None and outlook.rain_as_of is not None and outlook.rain_known and (
            outlook.rain_mm_h < s.nowcast.rain_min_mm_h)
        near = neighbours_of(point, self.reference.city.points, s)  # a point moved or removed no longer counts
        told = {n: word for n, word in self.told.group(point.point_id).items() if n in near}
        return (("dry_zone",) if dry_zone else ()) + (("neighbours_dry",) if neighbours_dry(told, s) else ())

    def withdraw(self, point: WaterloggingPoint, at: float, effects: Effects) -> None:
        """A forecast warning standing on a sensor that can no longer be trusted is withdrawn."""
        outlook = self.outlook.get(point.point_id)
        if outlook is not None and outlook.level is not None:
            self.outlook[point.point_id], alert = withdraw(outlook, at, point, self.settings)
            if alert is not None:
                send_alert(alert, effects)

    def on_rain(self, rain: PointRain, effects: Effects) -> None:
        """The rain over a point's zone changed: its forecast moves before its water does."""
        point = self.reference.city.points.get(rain.point_id)
        outlook = self.outlook.get(rain.point_id) or Outlook(Response.initial(self.settings))
        if point is None or (outlook.rain_as_of is not None and rain.as_of <= outlook.rain_as_of):
            return  # a point no longer monitored, or an older or resent update
        change = 0.0 if outlook.rain_as_of is None else (
            (rain.rain_mm_h - outlook.rain_mm_h) / max(rain.as_of - outlook.rain_as_of, 60.0) * 3600)
        self.outlook[rain.point_id] = replace(outlook, rain_mm_h=rain.rain_mm_h, rain_as_of=rain.as_of,
                                              rain_change=change if rain.known and outlook.rain_known else 0.0,
                                              rain_known=rain.known)
        watch = self.watch.get(rain.point_id)
        if watch is not None and watch.history:
            self.look_ahead(point, watch, max(rain.as_of, watch.history[-1][0]), effects)

    def look_ahead(self, point: WaterloggingPoint, watch: PointWatch, at: float, effects: Effects,
                   learn_after: tuple[float, float] | None = None) -> None:
        """The point's nowcast as of `at`: learned from its newest accepted reading (the change
        since `learn_after`), forecast, and warned of. A sensor at fault forecasts nothing."""
        s = self.settings
        outlook = self.outlook.get(point.point_id) or Outlook(Response.initial(s))
        if watch.health != "ok":
            return
        t, depth = watch.history[-1]
        if learn_after is not None and learn_after[0] < t and outlook.rain_known:
            rate = (depth - learn_after[1]) / (t - learn_after[0]) * 3600
            outlook = replace(outlook, response=learn(outlook.response, rate, outlook.rain_mm_h, depth, s))
        f = forecast(depth, t, at, outlook.response, trend_cm_h(watch.history), outlook.rain_mm_h, outlook.rain_change, s)
        self.outlook[point.point_id], alert = step_outlook(outlook, f, watch.level, point, s)
        if alert is not None:
            send_alert(alert, effects)

    def _changed(self, point: WaterloggingPoint, before: PointWatch, watch: PointWatch, alerts: list[Alert],
                 effects: Effects) -> None:
        """A point's new state: its alerts, and the road and zone told when its level moved."""
        self.watch[point.point_id] = watch
        at, depth = watch.history[-1] if watch.history else (watch.updated or 0.0, watch.depth_cm or 0.0)
        closes = rank(watch.level) >= LEVELS.index("closure")
        if point.segment_id and closes != (rank(before.level) >= LEVELS.index("closure")):
            # The road closes with the point's closure alert and reopens when that alert clears.
            effects.send(topics.closures, point.segment_id, RoadClosure(point.segment_id, point.point_id, closes, at, depth))
        if watch.level != before.level:  # the zone weighs its points' levels for garages and evacuation
            effects.send(topics.zone_floods, point.zone_id,
                         ZoneFlood(point.zone_id, point.point_id, "waterlogging", watch.level, at))
        for alert in alerts:
            send_alert(alert, effects)
        self.tell_neighbours(point, before, watch, watch.updated or at, effects)

    def tell_neighbours(self, point: WaterloggingPoint, before: PointWatch, watch: PointWatch, at: float,
                        effects: Effects) -> None:
        """When a point's water changes between dry, wet and unknown, the points around it are told."""
        water = water_of(watch, self.settings)
        if water is None or water == water_of(before, self.settings):
            return
        for neighbour in neighbours_of(point, self.reference.city.points, self.settings):
            effects.send(topics.point_neighbours, neighbour, PointNeighbour(neighbour, point.point_id, water, at))  # type: ignore[arg-type]

    def gauges(self) -> metrics.Gauges:
        levels = Tally((w.level,) for w in self.watch.values() if w.level)
        return metrics.merge(
            {"citybrain_waterlogging_points": levels},
            metrics.gauge("citybrain_active_incidents", sum(1 for w in self.watch.values() if w.incident)
                          + sum(1 for o in self.outlook.values() if o.incident), "Met"),
            metrics.gauge("citybrain_active_incidents", sum(1 for w in self.watch.values() if w.health_incident), "Infra"),
        )

    def mark_silent(self, now: float, effects: Effects) -> None:
        for point_id in silent_points(self.watch, now, self.settings):
            point = self.reference.city.points.get(point_id)
            if point is not None:
                before = self.watch[point_id]
                self.watch[point_id], alert = mark_stale(before, point, self.settings)
                send_alert(alert, effects)
                self.tell_neighbours(point, before, self.watch[point_id], parse_time(alert.sent), effects)
                self.withdraw(point, parse_time(alert.sent), effects)

    def on_idle(self, wall_now: float, effects: Effects) -> None:
        # Silence is event time passing on a live partition, not in a replay (streams/clock.py).
        if is_live(self.clock, wall_now, self.settings.waterlogging.sensor_silent_s):
            self.mark_silent(wall_now, effects)

    def flush(self, effects: Effects) -> None:
        self.mark_silent(self.clock, effects)
        for p in self.watch.dirty() | self.outlook.dirty():
            if p in self.watch:
                self.points[p] = _point_view(p, self.watch[p], self.outlook.get(p), self.settings)


def _point_view(point_id: str, w: PointWatch, outlook: Outlook | None, s: Settings) -> dict:
    """The live record of a point that dashboards and other stages read."""
    f = outlook.latest if outlook is not None else None
    ahead = {} if f is None else {
        **{f"forecast_{m:g}min_cm": d for m, d in zip(s.nowcast.horizons_min, f.depths_cm)},
        "forecast_crossings": {level: iso(t) for level, t in f.crossings}, "forecast_rate_cm_h": f.rate_cm_h,
        "forecast_as_of": iso(f.at), "warning_of": outlook.level if outlook else None,
    }
    return {
        "point_id": point_id, "depth_cm": w.depth_cm, "updated": iso(w.updated) if w.updated else None,
        "level": waterlogging_level(w.depth_cm, s) if w.health == "ok" and w.depth_cm is not None else None,
        "alert_level": w.level, "rising": w.rising, "sensor_health": w.health,
        "quality": w.quality, "quality_check": w.quality_check, **ahead,
    }


runtime.stage(WaterloggingStage)
