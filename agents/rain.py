"""Rain: rolling totals per gauge, and each zone's rainstorm signal (CMA colours).

  flood.rain_readings (by gauge) -> rain              -> rolling totals per gauge
  flood.gauge_rain (by zone)     -> zone_rain         -> zone totals, rainstorm signals
"""

from __future__ import annotations

import logging
import math
from collections import Counter as Tally
from dataclasses import dataclass, replace

from agents.alerts import send_alert
from agents.flood import colour_rank
from schemas.cap import COLOUR_SEVERITY, Alert, Incident, MsgType, bilingual, cap_id, zone_area
from schemas.contract import Rejected, iso
from schemas.events import RainGaugeReading
from schemas.records import GaugeRain, PointRain, ZoneFlood
from schemas.reference import Zone
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import GroupedTable, Table, Value

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Rain: rolling totals per gauge, rainstorm signals per zone


def rolling_totals(history: dict[float, float], as_of: float, s: Settings) -> list[float]:
    """Rain fallen in (as_of - H, as_of] for each horizon H, from {reading end time: mm}."""
    return [round(sum(mm for t, mm in history.items() if as_of - h * 3600 < t <= as_of), 2) for h in s.rain.horizons_h]


def total_over(totals: list[float], hours: float, s: Settings) -> float:
    return totals[s.rain.horizons_h.index(hours)]


def signal_colour(totals: list[float], s: Settings, margin: float = 0.0) -> str | None:
    """The highest rainstorm signal whose rule the totals meet (less `margin` mm), or None."""
    colour = None
    for name, hours, mm in s.rain.signals:
        if total_over(totals, hours, s) >= mm - margin:
            colour = name
    return colour


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
        msg: MsgType = "Alert" if watch.colour is None else "Update"
        incident = watch.incident or Incident(cap_id(f"rainstorm.{zone.zone_id}.{int(as_of)}"))
        return _signal_message(ZoneSignal(now, None, incident), msg, totals, as_of, zone, s)
    still = signal_colour(totals, s, s.rain.clear_margin_mm)
    if watch.colour is None or colour_rank(still, s) >= colour_rank(watch.colour, s):
        return replace(watch, below_since=None), None
    below_since = watch.below_since if watch.below_since is not None else as_of
    if as_of - below_since < s.rain.hold_s:
        return replace(watch, below_since=below_since), None
    if now is None:
        watch, alert = _signal_message(replace(watch, colour=None, below_since=None), "Cancel", totals, as_of, zone, s)
        return replace(watch, incident=None), alert
    return _signal_message(replace(watch, colour=now, below_since=None), "Update", totals, as_of, zone, s)


def _signal_message(
    watch: ZoneSignal, msg_type: MsgType, totals: list[float], as_of: float, zone: Zone, s: Settings
) -> tuple[ZoneSignal, Alert]:
    cleared = msg_type == "Cancel"
    colour = watch.colour or "blue"
    zh_colour = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}[colour]
    amounts = ", ".join(f"{mm:.0f} mm in {h:g} h" for h, mm in zip(s.rain.horizons_h, totals))
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
                  *((f"rain_{h:g}h_mm", f"{mm:.1f}") for h, mm in zip(s.rain.horizons_h, totals))]
    info = bilingual(texts, "Met", "Rainstorm", "AllClear" if cleared else "Prepare", "Past" if cleared else "Expected",
                     COLOUR_SEVERITY[colour], "Observed", parameters, [zone_area(zone)])
    assert watch.incident is not None  # opened with its first message
    incident, alert = watch.incident.message(s.cap, msg_type, as_of, info)
    return replace(watch, incident=incident), alert


class RainStage(Stage):
    """Per rain gauge: readings of the longest horizon and their rolling totals, sent on by zone
    after every reading, so that signals step exactly as the rain fell however it was batched."""

    name = "rain"
    source = "rain_readings"
    contract = RainGaugeReading
    history = Table(list[tuple[float, float]])  # per gauge: (time, mm) within the longest horizon, in time order
    totals = Table(GaugeRain, hash="gauges", restored=False)
    newest = Value(float, -math.inf)  # the newest reading's time on this partition: its clock

    def knows(self, r: RainGaugeReading) -> bool:
        return r.gauge_id in self.reference.city.gauges

    def on_event(self, r: RainGaugeReading, source: Source, effects: Effects) -> None:
        gauge = self.reference.city.gauges.get(r.gauge_id)
        if gauge is None:
            raise Rejected(f"unknown gauge_id {r.gauge_id!r}: not in the rain gauges reference", "unknown_reference")
        history = dict(self.history.get(r.gauge_id, ()))
        keep_s = max(self.settings.rain.horizons_h) * 3600
        if r.event_time in history:
            if history[r.event_time] == r.rain_mm:
                effects.repeated()
            else:
                effects.late(source, f"late: gauge {r.gauge_id} has a reading for {iso(r.event_time)} already")
            return
        if r.event_time <= max(history, default=r.event_time) - keep_s:
            effects.late(source, f"late: older than the longest horizon ({max(self.settings.rain.horizons_h):g} h) "
                                 f"before gauge {r.gauge_id}'s newest reading")
            return
        history[r.event_time] = r.rain_mm
        as_of = max(history)
        for t in [t for t in history if t <= as_of - keep_s]:
            del history[t]
        self.history[r.gauge_id] = sorted(history.items())
        totals = GaugeRain(r.gauge_id, gauge.zone_id, as_of, rolling_totals(history, as_of, self.settings))
        now = max(self.newest, r.event_time)
        if as_of <= now - self.settings.rain.gauge_silent_s:  # a late reading of a gauge gone silent: still silent
            totals = GaugeRain(r.gauge_id, gauge.zone_id, now, [], reporting=False)
        effects.send(topics.gauge_rain, gauge.zone_id, totals)
        self.totals[r.gauge_id] = totals
        if r.event_time > self.newest:
            self._fall_silent(self.newest, r.event_time, effects)
            self.newest = r.event_time

    def _fall_silent(self, before: float, now: float, effects: Effects) -> None:
        """Tell the zones of the gauges that went silent as this partition's clock moved from
        `before` to `now`: their last reading fell `gauge_silent_s` behind it. Judged in the
        partition's event time, so a replay finds the same gauges silent at the same readings; a
        partition with one gauge has no other clock to judge it by."""
        silent_s = self.settings.rain.gauge_silent_s
        for gauge_id, history in self.history.items():
            last = history[-1][0]
            gauge = self.reference.city.gauges.get(gauge_id)
            if gauge is not None and before - silent_s < last <= now - silent_s:
                log.warning("rain gauge %s has sent nothing since %s: zone %s stops counting it", gauge_id, iso(last),
                            gauge.zone_id)
                silent = GaugeRain(gauge_id, gauge.zone_id, now, [], reporting=False)
                effects.send(topics.gauge_rain, gauge.zone_id, silent)
                self.totals[gauge_id] = silent


class ZoneRainStage(Stage):
    """Per zone: the worst of its gauges' totals, and the zone's rainstorm signal.

    The zone's totals are taken at each gauge update; with a zone's gauges on several
    partitions, when a step happens can depend on which gauge's update came first, never
    which signals are reached.
    """

    name = "zone_rain"
    source = "gauge_rain"
    contract = GaugeRain
    rain_gauges = GroupedTable(GaugeRain, hash="gauges")  # by (zone, gauge): its latest totals
    signal = Table(ZoneSignal)
    intensity = Table(float)  # per zone: the rain told to its monitored points, mm/h
    zones = Table(dict, restored=False)  # the live view of each zone's rain

    def gauges(self) -> metrics.Gauges:
        unmonitored = sum(1 for group in self.rain_gauges.groups.values() if not any(g.reporting for g in group.values()))
        return metrics.merge(
            {"citybrain_rainstorm_zones": Tally((w.colour,) for w in self.signal.values() if w.colour)},
            metrics.gauge("citybrain_active_incidents", sum(1 for w in self.signal.values() if w.incident), "Met"),
            metrics.gauge("citybrain_rain_zones_unmonitored", unmonitored),
        )

    def on_event(self, g: GaugeRain, source: Source, effects: Effects) -> None:
        known = self.rain_gauges.get((g.zone_id, g.gauge_id))
        if known is not None and known.reporting and (
                g.as_of < known.as_of or (g.as_of == known.as_of and g.totals_mm == known.totals_mm)):
            return  # a resent or older update (a late reading re-sends its gauge's totals, changed)
        self.rain_gauges[g.zone_id, g.gauge_id] = g
        # Every reporting gauge's latest totals count, however far behind its partition runs: in a
        # replay one gauge's updates may come long after another's. A silent one counts no more.
        gauges = self.rain_gauges.group(g.zone_id).values()
        reporting = [x.totals_mm for x in gauges if x.reporting]
        before = self.signal.get(g.zone_id, ZoneSignal())
        if not reporting:  # nothing measures the zone's rain: its signal stands, and the zone says so
            log.warning("zone %s: every rain gauge has gone silent; its signal (%s) stands unmonitored",
                        g.zone_id, before.colour or "none")
            self.tell_points(g.zone_id, None, g.as_of, effects)
            self.zones[g.zone_id] = {**self.zones.get(g.zone_id, {"zone_id": g.zone_id, "signal": before.colour}),
                                     "as_of": iso(g.as_of), "gauges_reporting": 0, "gauges_silent": len(gauges)}
            return
        totals = [max(values) for values in zip(*reporting)]
        zone = self.reference.city.zones.get(g.zone_id) or Zone(g.zone_id, g.zone_id, [])
        watch, alert = step_signal(before, totals, g.as_of, zone, self.settings)
        self.signal[g.zone_id] = watch
        if watch.colour != before.colour:
            effects.send(topics.zone_floods, g.zone_id, ZoneFlood(g.zone_id, f"rain.{g.zone_id}", "rain", watch.colour, g.as_of))
        if alert is not None:
            send_alert(alert, effects)
        self.tell_points(g.zone_id, totals, max(x.as_of for x in gauges if x.reporting), effects)
        self.zones[g.zone_id] = {
            "zone_id": g.zone_id, "as_of": iso(g.as_of), "signal": watch.colour,
            **{f"rain_{h:g}h_mm": mm for h, mm in zip(self.settings.rain.horizons_h, totals)},
            "gauges_reporting": len(reporting), "gauges_silent": len(gauges) - len(reporting),
        }

    def tell_points(self, zone_id: str, totals: list[float] | None, as_of: float, effects: Effects) -> None:
        """The zone's rain (its shortest horizon's total, per hour; None: not known, every gauge
        silent) to each monitored point in it, as of its newest gauge, when it changes: a point's
        nowcast weighs it (agents/nowcast.py)."""
        rain_mm_h = -1.0 if totals is None else round(totals[0] / self.settings.rain.horizons_h[0], 2)  # -1: unknown
        if self.intensity.get(zone_id) == rain_mm_h:
            return
        self.intensity[zone_id] = rain_mm_h
        for point in self.reference.city.points.values():
            if point.zone_id == zone_id:
                effects.send(topics.point_rain, point.point_id,
                             PointRain(point.point_id, zone_id, as_of, max(rain_mm_h, 0.0), known=totals is not None))


runtime.stage(RainStage)
runtime.stage(ZoneRainStage)
