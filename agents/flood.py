"""The flood brain: rain and rainstorm signals, waterlogging at monitored low points, and the
health of their sensors.

  flood.water_depths (by point)  -> track_waterlogging -> per-point level and sensor health,
                                                         CAP alerts on crossing, rising, faults
  flood.rain_readings (by gauge) -> track_rain         -> rolling totals per gauge
  flood.gauge_rain (by zone)     -> signal_rainstorms  -> zone totals, CMA rainstorm signals
"""

from __future__ import annotations

import logging
import math
from collections import Counter as Tally
from dataclasses import dataclass, field, replace

from agents.alerts import send_alert
from schemas.cap import COLOUR_SEVERITY, Alert, Incident, bilingual, cap_id, circle_area, zone_area
from schemas.contract import Rejected, iso
from schemas.events import CitizenFloodReport, RainGaugeReading, WaterDepthReading
from schemas.records import CellReport, GaugeRain, PointReport, RoadClosure, ZoneFlood
from schemas.reference import WaterloggingPoint, Zone
from streams import metrics, runtime, topics
from streams.processor import Effects, Skew, Source, Stage
from streams.settings import Settings
from streams.table import Table

log = logging.getLogger(__name__)

LEVELS = ("watch", "warning", "closure", "severe")
SEVERITY = {"watch": "Minor", "warning": "Moderate", "closure": "Severe", "severe": "Extreme"}  # blue..red
# How far around a monitored point, and around a cluster of residents' reports, an alert speaks.
POINT_RADIUS_KM = 0.3
CELL_RADIUS_KM = 0.5

# ---------------------------------------------------------------------------------------------
# Rules (pure)


def waterlogging_level(depth_cm: float, s: Settings) -> str | None:
    """The highest level whose line the depth has reached, or None below the watch line."""
    level = None
    for name, line in zip(LEVELS, s.waterlogging_levels_cm):
        if depth_cm >= line:
            level = name
    return level


def rank(level: str | None) -> int:
    return -1 if level is None else LEVELS.index(level)


@dataclass(frozen=True, slots=True)
class PointWatch:
    """What the city brain remembers of one monitored point."""

    level: str | None = None  # the level under alert
    rising: bool = False  # alerting because of a fast rise
    below_since: float | None = None  # when the depth fell under the current level's clearing line
    incident: Incident | None = None
    history: list[tuple[float, float]] = field(default_factory=list)  # (t, depth) within the rise window
    same_since: float | None = None  # when the depth took its current value
    health: str = "ok"  # ok, faulty or stuck
    health_incident: Incident | None = None
    depth_cm: float | None = None
    updated: float | None = None
    reported_at: float | None = None  # the latest resident's report near the point
    corroborated: bool = False  # the incident is confirmed by a resident's report


def rise_cm(history: list[tuple[float, float]], t: float, depth: float, s: Settings) -> float:
    """How far the water rose within the rise window up to t."""
    recent = [d for when, d in history if t - when <= s.rise_window_s]
    return depth - min(recent, default=depth)


def superseded(watch: PointWatch, r: WaterDepthReading) -> str | None:
    """Whether the point's newer state stands against the reading: "repeat" for the reading it
    has (its sensor sent it again), "late" for an older one or another depth at the same time."""
    if watch.updated is None or r.event_time > watch.updated:
        return None
    return "repeat" if r.event_time == watch.updated and r.depth_cm == watch.depth_cm else "late"


def step_point(watch: PointWatch, r: WaterDepthReading, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, list[Alert]]:
    """Fold one depth reading into a point: sensor health first, then the waterlogging alert."""
    if superseded(watch, r):
        return watch, []
    alerts: list[Alert] = []
    if not 0 <= r.depth_cm <= s.depth_max_plausible_cm:
        health = "faulty"
    elif r.depth_cm == watch.depth_cm and r.depth_cm > 0 and watch.same_since is not None \
            and r.event_time - watch.same_since >= s.sensor_stuck_s:
        health = "stuck"
    else:
        health = "ok"
    same_since = watch.same_since if r.depth_cm == watch.depth_cm and watch.same_since is not None else r.event_time
    watch = replace(watch, same_since=same_since, depth_cm=r.depth_cm, updated=r.event_time)
    if health != watch.health:
        watch, alert = _health_change(watch, health, r.event_time, point, s)
        alerts.append(alert)
    if health != "ok":
        return watch, alerts  # a faulty or stuck sensor says nothing about the water
    rise = rise_cm(watch.history, r.event_time, r.depth_cm, s)
    history = [(t, d) for t, d in watch.history if r.event_time - t <= s.rise_window_s] + [(r.event_time, r.depth_cm)]
    watch = replace(watch, history=history)
    level = waterlogging_level(r.depth_cm, s)
    rising = rise >= s.rise_alert_cm
    target = level or ("watch" if rising else None)
    if rank(target) > rank(watch.level):
        msg = "Alert" if watch.level is None else "Update"
        incident = watch.incident or Incident(cap_id(f"waterlogging.{point.point_id}.{int(r.event_time)}"))
        corroborated = watch.corroborated or (
            watch.reported_at is not None and r.event_time - watch.reported_at <= s.report_window_s)
        watch = replace(watch, level=target, rising=rising, below_since=None, incident=incident, corroborated=corroborated)
        return _waterlogging_message(watch, msg, r, rise, point, s, alerts)
    if watch.level is None:
        return watch, alerts
    # Coming down: only once under (line - margin) for the hold time, to the level the depth is at.
    line = s.waterlogging_levels_cm[LEVELS.index(watch.level)]
    if r.depth_cm >= line - s.waterlogging_clear_margin_cm or rising:
        return replace(watch, below_since=None), alerts
    below_since = watch.below_since if watch.below_since is not None else r.event_time
    if r.event_time - below_since < s.waterlogging_hold_s:
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
    "warning": ("积水预警", "Waterlogging warning", "积水已超过黄线，请避开该路段。", "Water is over the yellow line: avoid this road."),
    "closure": ("积水封路", "Road closed by waterlogging", "积水已达封路深度，请勿驶入，尽快将车辆驶离地下车库等低洼处。",
                "The road is closed: do not drive in, and move vehicles out of underground garages and underpasses."),
    "severe": ("严重积水", "Severe waterlogging", "积水严重，车辆和行人请勿靠近，远离涵洞、下穿通道和地下空间。",
               "Severe flooding: keep vehicles and people away; stay out of culverts, underpasses and underground spaces."),
}


def _waterlogging_message(
    watch: PointWatch, msg_type: str, r: WaterDepthReading, rise: float, point: WaterloggingPoint, s: Settings,
    alerts: list[Alert],
) -> tuple[PointWatch, list[Alert]]:
    cleared = msg_type == "Cancel"
    level = watch.level or "watch"
    zh_head, en_head, zh_do, en_do = WATER_TEXT[level]
    if cleared:
        zh_head, en_head = "积水已消退", "Waterlogging has cleared"
        zh_do, en_do = "道路已恢复通行。", "The road is passable again."
    rising = " and rising fast" if watch.rising and not cleared else ""
    texts = {
        "zh-CN": (f"{point.name}{zh_head}", f"{point.name}积水深度{r.depth_cm:.0f}厘米（{iso(r.event_time)}）。", zh_do),
        "en-US": (f"{en_head} at {point.name}", f"Water at {point.name} is {r.depth_cm:.0f} cm deep{rising} "
                                                f"({rise:+.0f} cm in {s.rise_window_s / 60:.0f} min).", en_do),
    }
    parameters = [("point_id", point.point_id), ("zone_id", point.zone_id), ("level", "cleared" if cleared else level),
                  ("depth_cm", f"{r.depth_cm:.1f}"), ("rise_cm", f"{rise:.1f}")]
    if point.segment_id:
        parameters.append(("segment_id", point.segment_id))
    area = circle_area(f"{point.name} ({point.kind.replace('_', ' ')})", point.lat, point.lon, POINT_RADIUS_KM)
    info = bilingual(texts, "Met", "Road waterlogging", "AllClear" if cleared else ("Monitor" if level == "watch" else "Avoid"),
                     "Past" if cleared else "Immediate", SEVERITY[level], "Observed" if watch.corroborated else "Possible",
                     parameters, [area])
    incident, alert = watch.incident.message(s.alert_sender, msg_type, r.event_time, info)
    return replace(watch, incident=incident), [*alerts, alert]


def corroborate(watch: PointWatch, report: PointReport, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, list[Alert]]:
    """A resident's report near the point: an open incident becomes Observed (an Update); with
    none open, the report confirms an incident raised within the report window."""
    watch = replace(watch, reported_at=max(report.at, watch.reported_at or report.at))
    if watch.level is None or watch.corroborated:
        return watch, []
    watch = replace(watch, corroborated=True)
    if watch.health != "ok":
        return watch, []  # no depth worth publishing; the next good reading goes out as Observed
    as_of = WaterDepthReading("report", point.point_id, max(report.at, watch.updated or report.at), watch.depth_cm or 0.0)
    return _waterlogging_message(watch, "Update", as_of, rise_cm(watch.history, as_of.event_time, as_of.depth_cm, s),
                                 point, s, [])


def silent_points(watches: dict[str, PointWatch], now: float, s: Settings) -> list[str]:
    """Points whose sensor has said nothing for `sensor_silent_s` by `now`: stale, not dry."""
    return sorted(p for p, w in watches.items()
                  if w.health == "ok" and w.updated is not None and now - w.updated >= s.sensor_silent_s)


def mark_stale(watch: PointWatch, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, Alert]:
    """The point's sensor went silent: stale from the moment the silence grew too long (the same
    moment however the readings around it were batched)."""
    return _health_change(watch, "stale", watch.updated + s.sensor_silent_s, point, s)


def _health_change(watch: PointWatch, health: str, t: float, point: WaterloggingPoint, s: Settings) -> tuple[PointWatch, Alert]:
    """An operational alert when a point's sensor goes faulty or stuck, cancelled when it recovers."""
    recovered = health == "ok"
    incident = watch.health_incident or Incident(cap_id(f"sensor.{point.point_id}.{int(t)}"))
    what = {"faulty": ("reports impossible depths", "读数异常"), "stuck": ("is stuck at one value", "读数停滞"),
            "stale": ("has stopped reporting", "停止上报")}.get(health)
    en = f"Depth sensor at {point.name} " + (f"{what[0]}: the point is not monitored" if what else "reports normally again")
    zh = f"{point.name}水位传感器" + (f"{what[1]}，该点暂无有效监测" if what else "恢复正常")
    texts = {"zh-CN": (zh, zh, "请运维人员检查传感器。"),
             "en-US": (en, en, "No action for residents; maintenance to inspect the sensor.")}
    info = bilingual(texts, "Infra", "Waterlogging sensor fault", "AllClear" if recovered else "Assess",
                     "Past" if recovered else "Expected", "Minor", "Observed",
                     [("point_id", point.point_id), ("zone_id", point.zone_id), ("sensor_health", health)],
                     [circle_area(point.name, point.lat, point.lon, POINT_RADIUS_KM)])
    msg_type = "Cancel" if recovered else ("Alert" if watch.health_incident is None else "Update")
    after, alert = incident.message(s.alert_sender, msg_type, t, info)
    return replace(watch, health=health, health_incident=None if recovered else after), alert


# ---------------------------------------------------------------------------------------------
# Stage


class PointStage(Stage):
    """Per monitored point: depth, level, rise and sensor health; alerts on the way up and down."""

    name = "flood"
    source = "water_depths"
    contract = WaterDepthReading
    tables = {"point_reports": PointReport}
    hashes = ("meta",)
    watch = Table(PointWatch)
    points = Table(dict, restored=False)  # the live view of each point

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        # The partition's event time: the newest reading of any of its points.
        self.clock = max((w.updated for w in self.watch.values() if w.updated is not None), default=-math.inf)
        self.skew = Skew(self.settings.max_skew_s)
        self.skew.restore(hashes.get("meta", {}))
        self._saved_skew = self.skew.saved()

    def knows(self, r: WaterDepthReading | PointReport) -> bool:
        return r.point_id in self.reference.city.points

    def on_event(self, r: WaterDepthReading | PointReport, source: Source, effects: Effects) -> None:
        if isinstance(r, PointReport):
            point = self.reference.city.points.get(r.point_id)
            if point is not None:
                self.watch[r.point_id], alerts = corroborate(self.watch.get(r.point_id, PointWatch()), r, point, self.settings)
                for alert in alerts:
                    send_alert(alert, effects)
            return
        point = self.reference.city.points.get(r.point_id)
        if point is None:
            raise Rejected(f"unknown point_id {r.point_id!r}: not in the waterlogging points reference", "unknown_reference")
        before = self.watch.get(r.point_id, PointWatch())
        if r.event_time > self.clock:
            alone = lambda: all(p == r.point_id for p, w in self.watch.items() if w.updated is not None)  # noqa: E731
            if not self.skew.allows(r.point_id, r.event_time, self.clock, source, alone):
                raise Skew.wild(r.point_id, r.event_time, self.clock)
            self.clock = r.event_time
        past = superseded(before, r)
        if past == "repeat":
            effects.repeated()
            return
        if past == "late":
            effects.late(source, f"late: point {r.point_id} has a reading of {iso(before.updated)} already")
            return
        watch, alerts = step_point(before, r, point, self.settings)
        self.watch[r.point_id] = watch
        closes = rank(watch.level) >= LEVELS.index("closure")
        if point.segment_id and closes != (rank(before.level) >= LEVELS.index("closure")):
            # The road closes with the point's closure alert and reopens when that alert clears.
            effects.send(topics.closures, point.segment_id,
                         RoadClosure(point.segment_id, point.point_id, closes, r.event_time, r.depth_cm))
        if watch.level != before.level:  # the zone weighs its points' levels for garages and evacuation
            effects.send(topics.zone_floods, point.zone_id,
                         ZoneFlood(point.zone_id, point.point_id, "waterlogging", watch.level, r.event_time))
        for alert in alerts:
            send_alert(alert, effects)

    def gauges(self) -> metrics.Gauges:
        levels = Tally((w.level,) for w in self.watch.values() if w.level)
        return metrics.merge(
            {"citybrain_waterlogging_points": levels},
            metrics.gauge("citybrain_active_incidents", sum(1 for w in self.watch.values() if w.incident), "Met"),
            metrics.gauge("citybrain_active_incidents", sum(1 for w in self.watch.values() if w.health_incident), "Infra"),
        )

    def mark_silent(self, now: float, effects: Effects) -> None:
        for point_id in silent_points(self.watch, now, self.settings):
            point = self.reference.city.points.get(point_id)
            if point is not None:
                self.watch[point_id], alert = mark_stale(self.watch[point_id], point, self.settings)
                send_alert(alert, effects)

    def on_idle(self, wall_now: float, effects: Effects) -> None:
        # A live partition that falls silent keeps time by the wall clock; a replay of the past does not.
        if self.clock >= wall_now - self.settings.sensor_silent_s:
            self.mark_silent(wall_now, effects)

    def flush(self, effects: Effects) -> None:
        self.mark_silent(self.clock, effects)
        if self.skew.saved() != self._saved_skew:
            self._saved_skew = self.skew.saved()
            effects.batch.hset("meta", self._saved_skew)
        for p in self.watch.changed:
            self.points[p] = _point_view(p, self.watch[p], self.settings)


def _point_view(point_id: str, w: PointWatch, s: Settings) -> dict:
    """The live record of a point that dashboards and other stages read."""
    return {
        "point_id": point_id, "depth_cm": w.depth_cm, "updated": iso(w.updated) if w.updated else None,
        "level": waterlogging_level(w.depth_cm, s) if w.health == "ok" and w.depth_cm is not None else None,
        "alert_level": w.level, "rising": w.rising, "sensor_health": w.health,
    }


runtime.stage(PointStage, "track_waterlogging")




# ---------------------------------------------------------------------------------------------
# Rain: rolling totals per gauge, rainstorm signals per zone


def signal_rules(s: Settings) -> list[tuple[str, float, float]]:
    """(colour, hours, mm) from the settings, lowest signal first."""
    return [(c, float(h), float(mm)) for c, h, mm in (rule.split(":") for rule in s.rainstorm_signals)]


def rolling_totals(history: dict[float, float], as_of: float, s: Settings) -> list[float]:
    """Rain fallen in (as_of - H, as_of] for each horizon H, from {reading end time: mm}."""
    return [round(sum(mm for t, mm in history.items() if as_of - h * 3600 < t <= as_of), 2) for h in s.rain_horizons_h]


def total_over(totals: list[float], hours: float, s: Settings) -> float:
    return totals[s.rain_horizons_h.index(hours)]


def signal_colour(totals: list[float], s: Settings, margin: float = 0.0) -> str | None:
    """The highest rainstorm signal whose rule the totals meet (less `margin` mm), or None."""
    colour = None
    for name, hours, mm in signal_rules(s):
        if total_over(totals, hours, s) >= mm - margin:
            colour = name
    return colour


def colour_rank(colour: str | None, s: Settings) -> int:
    return -1 if colour is None else [c for c, _, _ in signal_rules(s)].index(colour)


@dataclass(frozen=True, slots=True)
class ZoneSignal:
    """A zone's rainstorm signal and its incident."""

    colour: str | None = None
    below_since: float | None = None
    incident: Incident | None = None


def step_signal(
    watch: ZoneSignal, totals: list[float], as_of: float, zone: Zone, s: Settings
) -> tuple[ZoneSignal, Alert | None]:
    """Escalate at once; step down only when the current signal's rule has failed by the margin
    for the hold time, to the signal the rain still meets."""
    now = signal_colour(totals, s)
    if colour_rank(now, s) > colour_rank(watch.colour, s):
        msg = "Alert" if watch.colour is None else "Update"
        incident = watch.incident or Incident(cap_id(f"rainstorm.{zone.zone_id}.{int(as_of)}"))
        return _signal_message(ZoneSignal(now, None, incident), msg, totals, as_of, zone, s)
    if watch.colour is None or colour_rank(signal_colour(totals, s, s.rain_clear_margin_mm), s) >= colour_rank(watch.colour, s):
        return replace(watch, below_since=None), None
    below_since = watch.below_since if watch.below_since is not None else as_of
    if as_of - below_since < s.rain_hold_s:
        return replace(watch, below_since=below_since), None
    if now is None:
        watch, alert = _signal_message(replace(watch, colour=None, below_since=None), "Cancel", totals, as_of, zone, s)
        return replace(watch, incident=None), alert
    return _signal_message(replace(watch, colour=now, below_since=None), "Update", totals, as_of, zone, s)


def _signal_message(
    watch: ZoneSignal, msg_type: str, totals: list[float], as_of: float, zone: Zone, s: Settings
) -> tuple[ZoneSignal, Alert]:
    cleared = msg_type == "Cancel"
    colour = watch.colour or "blue"
    zh_colour = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}[colour]
    amounts = ", ".join(f"{mm:.0f} mm in {h:g} h" for h, mm in zip(s.rain_horizons_h, totals))
    if cleared:
        texts = {"zh-CN": (f"{zone.name}暴雨预警解除", f"{zone.name}累计雨量已回落。", "暴雨预警解除，注意道路积水消退情况。"),
                 "en-US": (f"Rainstorm warning lifted for {zone.name}", f"Rainfall in {zone.name} has eased ({amounts}).",
                           "The rainstorm warning is over; take care where water is still draining.")}
    else:
        texts = {"zh-CN": (f"{zone.name}暴雨{zh_colour}预警", f"{zone.name}累计雨量已达暴雨{zh_colour}预警标准。",
                           "避免前往低洼地带、地下通道和地下车库，注意防范城市内涝。"),
                 "en-US": (f"{colour.capitalize()} rainstorm warning for {zone.name}", f"Rainfall in {zone.name}: {amounts}.",
                           "Keep away from low-lying roads, underpasses and underground garages; expect waterlogging.")}
    parameters = [("zone_id", zone.zone_id), ("signal", "cleared" if cleared else colour),
                  *((f"rain_{h:g}h_mm", f"{mm:.1f}") for h, mm in zip(s.rain_horizons_h, totals))]
    info = bilingual(texts, "Met", "Rainstorm", "AllClear" if cleared else "Prepare", "Past" if cleared else "Expected",
                     COLOUR_SEVERITY[colour], "Observed", parameters, [zone_area(zone)])
    incident, alert = watch.incident.message(s.alert_sender, msg_type, as_of, info)
    return replace(watch, incident=incident), alert


class GaugeStage(Stage):
    """Per rain gauge: readings of the longest horizon and their rolling totals, sent on by zone
    after every reading, so that signals step exactly as the rain fell however it was batched."""

    name = "rain"
    source = "rain_readings"
    contract = RainGaugeReading
    history = Table(list[tuple[float, float]])  # per gauge: (time, mm) within the longest horizon, in time order
    totals = Table(GaugeRain, hash="gauges", restored=False)

    def knows(self, r: RainGaugeReading) -> bool:
        return r.gauge_id in self.reference.city.gauges

    def on_event(self, r: RainGaugeReading, source: Source, effects: Effects) -> None:
        gauge = self.reference.city.gauges.get(r.gauge_id)
        if gauge is None:
            raise Rejected(f"unknown gauge_id {r.gauge_id!r}: not in the rain gauges reference", "unknown_reference")
        history = dict(self.history.get(r.gauge_id, ()))
        keep_s = max(self.settings.rain_horizons_h) * 3600
        if r.event_time in history:
            if history[r.event_time] == r.rain_mm:
                effects.repeated()
            else:
                effects.late(source, f"late: gauge {r.gauge_id} has a reading for {iso(r.event_time)} already")
            return
        if r.event_time <= max(history, default=r.event_time) - keep_s:
            effects.late(source, f"late: older than the longest horizon ({max(self.settings.rain_horizons_h):g} h) "
                                 f"before gauge {r.gauge_id}'s newest reading")
            return
        history[r.event_time] = r.rain_mm
        as_of = max(history)
        for t in [t for t in history if t <= as_of - keep_s]:
            del history[t]
        self.history[r.gauge_id] = sorted(history.items())
        totals = GaugeRain(r.gauge_id, gauge.zone_id, as_of, rolling_totals(history, as_of, self.settings))
        effects.send(topics.gauge_rain, gauge.zone_id, totals)
        self.totals[r.gauge_id] = totals


class ZoneRainStage(Stage):
    """Per zone: the worst of its gauges' totals, and the zone's rainstorm signal.

    The zone's totals are taken at each gauge update; with a zone's gauges on several
    partitions, when a step happens can depend on which gauge's update came first, never
    which signals are reached.
    """

    name = "zone_rain"
    source = "gauge_rain"
    contract = GaugeRain
    rain_gauges = Table(GaugeRain, key=(str, str), hash="gauges")  # by (zone, gauge): its latest totals
    signal = Table(ZoneSignal)
    zones = Table(dict, restored=False)  # the live view of each zone's rain

    def gauges(self) -> metrics.Gauges:
        return metrics.merge(
            {"citybrain_rainstorm_zones": Tally((w.colour,) for w in self.signal.values() if w.colour)},
            metrics.gauge("citybrain_active_incidents", sum(1 for w in self.signal.values() if w.incident), "Met"),
        )

    def on_event(self, g: GaugeRain, source: Source, effects: Effects) -> None:
        known = self.rain_gauges.get((g.zone_id, g.gauge_id))
        if known is not None and (g.as_of < known.as_of or (g.as_of == known.as_of and g.totals_mm == known.totals_mm)):
            return  # a resent or older update (a late reading re-sends its gauge's totals, changed)
        self.rain_gauges[g.zone_id, g.gauge_id] = g
        # Every gauge's latest totals count, however far behind its partition runs: in a replay one
        # gauge's updates may come long after another's.
        zone_gauges = [x for (zone_id, _), x in self.rain_gauges.items() if zone_id == g.zone_id]
        totals = [max(values) for values in zip(*(x.totals_mm for x in zone_gauges))]
        zone = self.reference.city.zones.get(g.zone_id) or Zone(g.zone_id, g.zone_id, [])
        before = self.signal.get(g.zone_id, ZoneSignal())
        watch, alert = step_signal(before, totals, g.as_of, zone, self.settings)
        self.signal[g.zone_id] = watch
        if watch.colour != before.colour:
            effects.send(topics.zone_floods, g.zone_id, ZoneFlood(g.zone_id, f"rain.{g.zone_id}", "rain", watch.colour, g.as_of))
        if alert is not None:
            send_alert(alert, effects)
        self.zones[g.zone_id] = {
            "zone_id": g.zone_id, "as_of": iso(g.as_of), "signal": watch.colour,
            **{f"rain_{h:g}h_mm": mm for h, mm in zip(self.settings.rain_horizons_h, totals)},
        }


runtime.stage(GaugeStage, "track_rain")
runtime.stage(ZoneRainStage, "signal_rainstorms")



# ---------------------------------------------------------------------------------------------
# Residents' reports: corroborating monitored points, clusters where there is no sensor


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


def nearest_point(points: dict[str, WaterloggingPoint], lat: float, lon: float) -> tuple[WaterloggingPoint | None, float]:
    best, best_m = None, math.inf
    for point in points.values():
        d = distance_m(lat, lon, point.lat, point.lon)
        if d < best_m:
            best, best_m = point, d
    return best, best_m


def cell_of(lat: float, lon: float, s: Settings) -> str:
    return f"{math.floor(lat / s.report_cell_deg)}_{math.floor(lon / s.report_cell_deg)}"


class ReportStage(Stage):
    """Routes each report: to the monitored point it is near, or to its grid cell. The reporter's
    phone number goes no further than this stage."""

    name = "reports"
    source = "flood_reports"
    contract = CitizenFloodReport

    def on_event(self, r: CitizenFloodReport, source: Source, effects: Effects) -> None:
        point, metres = nearest_point(self.reference.city.points, r.lat, r.lon)
        if point is not None and metres <= self.settings.report_radius_m:
            effects.send(topics.point_reports, point.point_id, PointReport(point.point_id, r.report_id, r.event_time, round(metres, 1)))
        else:
            cell = cell_of(r.lat, r.lon, self.settings)
            effects.send(topics.report_cells, cell, CellReport(cell, r.report_id, r.event_time, r.lat, r.lon))

    def flush(self, effects: Effects) -> None:
        pass


@dataclass(frozen=True, slots=True)
class CellWatch:
    reports: dict[str, float] = field(default_factory=dict)  # report_id -> time, within the window
    incident: Incident | None = None
    lat: float = 0.0
    lon: float = 0.0
    cleared_at: float | None = None  # reports from before the last all-clear belong to that episode


def step_cell(watch: CellWatch, c: CellReport, s: Settings) -> tuple[CellWatch, Alert | None]:
    """Count a report; enough of them close together raise a Likely alert for the cell."""
    if c.report_id in watch.reports or (watch.cleared_at is not None and c.at <= watch.cleared_at):
        return watch, None
    # Counted back from the newest report, so reports that arrive out of order count the same.
    newest = max(c.at, *watch.reports.values()) if watch.reports else c.at
    reports = {rid: t for rid, t in (watch.reports | {c.report_id: c.at}).items() if newest - t <= s.report_window_s}
    watch = replace(watch, reports=reports, lat=c.lat, lon=c.lon)
    if watch.incident is not None or len(reports) < s.report_cluster_size:
        return watch, None
    incident = Incident(cap_id(f"reported.{c.cell_id}.{int(newest)}"))
    return _cell_message(watch, incident, "Alert", newest, c.cell_id, s)


def quiet_cells(cells: dict[str, CellWatch], now: float, s: Settings) -> list[str]:
    return sorted(cid for cid, w in cells.items()
                  if w.incident is not None and now - max(w.reports.values(), default=now) >= s.report_clear_s)


def clear_cell(watch: CellWatch, cell_id: str, s: Settings) -> tuple[CellWatch, Alert]:
    """No report for `report_clear_s`: the reported waterlogging is over, from that moment."""
    at = max(watch.reports.values()) + s.report_clear_s
    watch, alert = _cell_message(watch, watch.incident, "Cancel", at, cell_id, s)
    return replace(watch, incident=None, reports={}, cleared_at=at), alert


def _cell_message(watch: CellWatch, incident: Incident, msg_type: str, at: float, cell_id: str, s: Settings) -> tuple[CellWatch, Alert]:
    cleared = msg_type == "Cancel"
    texts = {
        "zh-CN": ("市民报告积水已消退" if cleared else "多名市民报告此处积水",
                  f"{len(watch.reports)}条市民报告，该处无监测点。", "注意绕行低洼路段。" if not cleared else "无需采取行动。"),
        "en-US": ("Reported waterlogging has cleared" if cleared else "Residents report waterlogging here",
                  f"{len(watch.reports)} residents' reports where no point is monitored.",
                  "No action needed." if cleared else "Take care on low-lying roads here; avoid them if you can."),
    }
    info = bilingual(texts, "Met", "Reported waterlogging", "AllClear" if cleared else "Avoid", "Past" if cleared else "Expected",
                     "Moderate", "Likely", [("cell_id", cell_id), ("reports", str(len(watch.reports)))],
                     [circle_area(f"Reports around {watch.lat:.4f},{watch.lon:.4f}", watch.lat, watch.lon, CELL_RADIUS_KM)])
    incident, alert = incident.message(s.alert_sender, msg_type, at, info)
    return replace(watch, incident=incident), alert


class CellStage(Stage):
    """Per grid cell without a monitored point: clusters of residents' reports."""

    name = "report_cells"
    source = "report_cells"
    contract = CellReport
    cells = Table(CellWatch)

    def gauges(self) -> metrics.Gauges:
        return metrics.gauge("citybrain_active_incidents", sum(1 for w in self.cells.values() if w.incident), "Met")

    def on_event(self, c: CellReport, source: Source, effects: Effects) -> None:
        self.cells[c.cell_id], alert = step_cell(self.cells.get(c.cell_id, CellWatch()), c, self.settings)
        if alert is not None:
            send_alert(alert, effects)

    def flush(self, effects: Effects) -> None:
        clock = max((t for w in self.cells.values() for t in w.reports.values()), default=-math.inf)
        for cell_id in quiet_cells(self.cells, clock, self.settings):
            self.cells[cell_id], alert = clear_cell(self.cells[cell_id], cell_id, self.settings)
            send_alert(alert, effects)


runtime.stage(ReportStage, "locate_reports")
runtime.stage(CellStage, "cluster_reports")
