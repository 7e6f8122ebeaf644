"""The traffic brain: road segment indicators, congestion alerts, city index and signal plans.

Three stages, each keyed so that what it combines lives on one partition:
  traffic.readings (by segment)        -> traffic        -> per-segment windows, alerts
  traffic.city_parts (one partition)   -> city           -> city-wide TPI and ranking
  traffic.approach_flows (by junction) -> signals        -> Webster plans
"""

from __future__ import annotations

import heapq
import logging
import math
import zlib
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from math import floor
from typing import Any

from agents.alerts import held_since, send_alert
from schemas.cap import Alert, Incident, MsgType, bilingual, cap_id, road_area
from schemas.contract import Rejected, iso, rounded
from schemas.events import TrafficReading
from schemas.records import (
    ApproachFlow,
    CityIndex,
    CityIndexPart,
    CongestionLevel,
    FlowReport,
    PhaseGreen,
    RoadClosure,
    SegmentWindow,
    SignalPlan,
)
from schemas.reference import Intersection, Segment, Zone
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import GroupedTable, Ranking, Table, Value
from streams.topics import partitions_of
from streams.windowed import WindowedStage

log = logging.getLogger(__name__)

LEVELS: tuple[CongestionLevel, ...] = ("free", "basically_free", "light", "moderate", "severe")

# ---------------------------------------------------------------------------------------------
# Rules (pure)


def delay_time_proportion(speed_kmh: float, free_flow_kmh: float) -> float:
    """DTP = 1 - v / v_free, within [0, 1] (GB/T 33171)."""
    dtp = 1.0 - speed_kmh / free_flow_kmh
    return 0.0 if dtp < 0.0 else 1.0 if dtp > 1.0 else dtp


def traffic_performance_index(dtp: float, bands: tuple[float, ...]) -> float:
    """TPI 0-10: band i of the DTP bands maps linearly onto [2i, 2i + 2]."""
    i = bisect_right(bands, dtp) - 1  # the highest band whose lower bound dtp reaches
    if i < 0:
        return 0.0
    upper = bands[i + 1] if i + 1 < len(bands) else 1.0
    return min(10.0, 2 * i + 2 * (dtp - bands[i]) / (upper - bands[i]))


def congestion_level(tpi: float) -> CongestionLevel:
    return LEVELS[min(len(LEVELS) - 1, int(tpi // 2))]


# A window's accumulator: [vehicles counted, speed x vehicles, occupancy x seconds, seconds
# counted, seconds with occupancy, vehicles with a speed]: a probe feed's sample adds to the
# speeds only, a feed without occupancy to the counts only.
def fold_reading(acc: list | None, r: TrafficReading) -> list:
    """Add a reading to a window."""
    acc = widened(acc) if acc else [0, 0.0, 0.0, 0.0, 0.0, 0]
    acc[1] += r.speed_kmh * r.vehicle_count
    acc[5] += r.vehicle_count
    if not r.sampled:
        acc[0] += r.vehicle_count
        acc[3] += r.interval_s
    if r.occupancy is not None:
        acc[2] += r.occupancy * r.interval_s
        acc[4] += r.interval_s
    return acc


def widened(acc: list) -> list:
    """A window opened before sampled counts and readings without occupancy were told apart
    (four slots, every reading full): the same window in six."""
    if len(acc) == 4:
        acc.extend((acc[3], acc[0]))
    return acc


def flow_vph(acc: list) -> float:
    """Vehicles per hour over the seconds the detectors covered."""
    return 3600.0 * acc[0] / acc[3]


def summarize(segment: Segment, start: float, acc: list, s: Settings, closed: bool = False) -> SegmentWindow:
    """A segment's indicators for one window."""
    counted, speed_x_vehicles, occupied_s, covered_s, occupancy_s, vehicles = widened(acc)
    free = segment.free_flow_kmh
    # With no vehicles seen the road is taken as free-flowing.
    speed = speed_x_vehicles / vehicles if vehicles else free
    dtp = delay_time_proportion(speed, free)
    tpi = traffic_performance_index(dtp, s.traffic.dtp_bands)
    window = s.window_s
    flow = 3600.0 * counted / covered_s if covered_s else None
    # rounded(x, 3) and rounded(x, 4), written out: every segment's window closes through here.
    return SegmentWindow(
        segment.segment_id, segment.zone_id, start, start + window, vehicles,
        None if flow is None else floor(flow * 1e3 + 0.5) / 1e3, floor(speed * 1e3 + 0.5) / 1e3,
        floor(occupied_s / occupancy_s * 1e4 + 0.5) / 1e4 if occupancy_s else None, floor(dtp * 1e4 + 0.5) / 1e4,
        floor(tpi * 1e3 + 0.5) / 1e3, congestion_level(tpi),
        None if flow is None else floor(flow * window / 3600.0 * segment.length_km * 1e4 + 0.5) / 1e4, closed,
    )


@dataclass(frozen=True, slots=True)
class CongestionWatch:
    """Hysteresis state of one segment's congestion alert."""

    level: str | None = None  # the level under alert, or None
    congested_since: float | None = None  # at moderate or worse since (event time), while not alerting
    calm_since: float | None = None  # below the clearing threshold since, while alerting
    incident: Incident | None = None


FLOWING = CongestionWatch()  # a segment with no congestion under way


@dataclass(frozen=True, slots=True)
class RoadClosed:
    """Which waterlogging points close a segment (point_id -> since), and the closure incident."""

    points: dict[str, float] = field(default_factory=dict)
    incident: Incident | None = None


def step_congestion(
    watch: CongestionWatch, w: SegmentWindow, segment: Segment, zone: Zone | None, s: Settings
) -> tuple[CongestionWatch, Alert | None]:
    """Advance a segment's alert by one window: raise once congested for `raise_s` of event time,
    escalate at once, clear once calm by the margin for `clear_s`."""
    c = s.congestion
    level = "severe" if w.tpi >= c.severe_tpi else "moderate" if w.tpi >= c.moderate_tpi else None
    if watch.level is None:
        since = held_since(watch.congested_since, level is not None, w.window_start)
        if since is None or w.window_end - since < c.raise_s:
            return (watch if since == watch.congested_since else CongestionWatch(congested_since=since)), None
        incident = Incident(cap_id(f"congestion.{segment.segment_id}.{int(w.window_start)}"))
        watch = CongestionWatch(level=level, incident=incident)
        return _message(watch, w, segment, zone, "Alert", s)
    calm_since = held_since(watch.calm_since, w.tpi < c.moderate_tpi - c.clear_margin_tpi, w.window_start)
    if calm_since is not None and w.window_end - calm_since >= c.clear_s:
        _, alert = _message(watch, w, segment, zone, "Cancel", s)
        return FLOWING, alert
    if watch.level == "moderate" and level == "severe":
        return _message(replace(watch, level=level, calm_since=None), w, segment, zone, "Update", s)
    return (watch if calm_since == watch.calm_since else replace(watch, calm_since=calm_since)), None


LEVEL_NAMES = {"moderate": ("Moderate", "中度"), "severe": ("Severe", "严重")}


def congestion_texts(msg_type: MsgType, level: str, segment: Segment, tpi: float) -> dict[str, tuple[str, str, str]]:
    """(headline, description, instruction) by language, for a resident or driver to act on."""
    en, zh = LEVEL_NAMES[level]
    if msg_type == "Cancel":
        return {
            "zh-CN": (f"{segment.name}拥堵已解除", f"{segment.name}交通指数回落至{tpi:.1f}，通行恢复。",
                      "道路已恢复通行，无需绕行。"),
            "en-US": (f"Congestion cleared on {segment.name}", f"The traffic index on {segment.name} is back to {tpi:.1f}.",
                      "Traffic is flowing again; no detour needed."),
        }
    return {
        "zh-CN": (f"{segment.name}{zh}拥堵", f"{segment.name}交通指数{tpi:.1f}，{zh}拥堵已持续多个时段。",
                  "请绕行或错峰出行，预留更多通行时间。"),
        "en-US": (f"{en} congestion on {segment.name}",
                  f"The traffic index on {segment.name} is {tpi:.1f} ({en.lower()} congestion) and has stayed there.",
                  "Avoid this road if you can; allow extra time or take another route."),
    }


def _message(
    watch: CongestionWatch, w: SegmentWindow, segment: Segment, zone: Zone | None, msg_type: MsgType, s: Settings
) -> tuple[CongestionWatch, Alert]:
    cleared = msg_type == "Cancel"
    level, incident = watch.level, watch.incident
    assert level is not None and incident is not None  # an incident under way
    parameters = [("zone_id", segment.zone_id), ("segment_id", segment.segment_id),
                  ("level", "cleared" if cleared else level), ("tpi", f"{w.tpi:.3f}")]
    info = bilingual(congestion_texts(msg_type, level, segment, w.tpi), "Transport", "Road congestion",
                     "AllClear" if cleared else "Avoid", "Past" if cleared else "Immediate",
                     "Severe" if level == "severe" else "Moderate", "Observed", parameters, [road_area(segment, zone)])
    incident, alert = incident.message(s.cap, msg_type, w.window_end, info)
    return replace(watch, incident=incident), alert


def webster(intersection: Intersection, flows: dict[str, float], window_start: float, s: Settings) -> SignalPlan:
    """Webster's optimum cycle and green splits from one window's approach flows.

    y of an approach = q / (s x lanes); a phase's critical y is its approaches' max; Y = sum of
    phases' y; L = lost time per phase x phases; C0 = (1.5 L + 5) / (1 - Y), clamped; green of
    a phase = (y / Y)(C0 - L). At Y >= the oversaturation limit no cycle is computed.
    """
    phase_y: dict[str, float] = {}
    missing = [a.approach_id for a in intersection.approaches if a.approach_id not in flows]
    for a in intersection.approaches:
        saturation = (a.saturation_flow_vphpl or s.signals.saturation_flow_vphpl) * a.lanes
        y = flows.get(a.approach_id, 0.0) / saturation
        phase_y[a.phase] = max(phase_y.get(a.phase, 0.0), y)
    total_y = sum(phase_y.values())
    lost = intersection.lost_time_per_phase_s * len(phase_y)
    if total_y >= s.signals.oversaturated_flow_ratio:
        return SignalPlan(
            intersection.intersection_id, window_start, rounded(total_y, 4), lost, True, None,
            [PhaseGreen(p, rounded(y, 4), 0.0) for p, y in phase_y.items()], missing,
        )
    cycle = min(s.signals.cycle_max_s, max(s.signals.cycle_min_s, (1.5 * lost + 5) / (1 - total_y)))
    effective = cycle - lost
    phases = [
        PhaseGreen(p, rounded(y, 4), rounded(effective * (y / total_y if total_y else 1 / len(phase_y)), 2))
        for p, y in phase_y.items()
    ]
    return SignalPlan(
        intersection.intersection_id, window_start, rounded(total_y, 4), lost, False, rounded(cycle, 2), phases, missing
    )


# ---------------------------------------------------------------------------------------------
# Stages


class TrafficStage(WindowedStage):
    """Per road segment: windowed indicators, latest state, ranking and congestion alerts."""

    name = "traffic"
    source = "traffic_readings"
    contract = TrafficReading
    alongside = {"closures": RoadClosure}
    watch = Table(CongestionWatch)  # by segment: congestion under alert
    closed = Table(RoadClosed)  # by segment: the points that close it
    segments = Table(SegmentWindow, restored=False)  # the live view: each segment's latest window
    ranking = Ranking()  # open segments by the TPI of their latest window

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        super().restore(hashes)
        # A window saved with the readings it had counted inside its accumulator (as before they
        # were kept beside it): they are noted as counted, so a resend across the upgrade is not.
        for start, accumulators in self.windows.open.items():
            for key, acc in accumulators.items():
                if acc and isinstance(acc[-1], list):
                    for reading in acc.pop():
                        self.count_once(start, f"{key}|{reading}")
        self.flows: list[ApproachFlow] = []  # closed approach windows not yet reported
        self.reported = -math.inf

    def on_final(self, final: float, effects: Effects) -> None:
        """Tell every signal partition how far this partition has closed windows, with the flows."""
        if final == -math.inf or (final == self.reported and not self.flows):
            return
        n = partitions_of("approach_flows", self.settings)
        by_partition: dict[int, list[ApproachFlow]] = defaultdict(list)
        for f in self.flows:
            by_partition[signal_partition(f.intersection_id, n)].append(f)
        for p in range(n):
            effects.send(topics.approach_flows, None, FlowReport(self.partition, final, by_partition[p]), partition=p)
        self.flows, self.reported = [], final

    def on_closure(self, c: RoadClosure, effects: Effects) -> None:
        """Join a waterlogging closure into the segment: closed while any of its points closes it."""
        segment = self.reference.city.segments.get(c.segment_id)
        if segment is None:
            log.warning("closure of unknown segment %s from point %s ignored", c.segment_id, c.point_id)
            return
        was = self.closed.get(c.segment_id, RoadClosed())
        points = {p: t for p, t in was.points.items() if p != c.point_id} | ({c.point_id: c.at} if c.closed else {})
        now, alert = step_closure(replace(was, points=points), bool(was.points), c, segment,
                                  self.reference.city.zones.get(segment.zone_id), self.settings)
        self.closed[c.segment_id] = now
        if alert is not None:
            send_alert(alert, effects)
        if now.points:
            self.ranking.discard(c.segment_id)

    def knows(self, r: TrafficReading | RoadClosure) -> bool:
        if isinstance(r, RoadClosure):
            return True
        return r.segment_id in self.reference.city.segments and (
            r.approach_id is None or r.approach_id in self.reference.approaches
        )

    def knows_all(self, values: Iterable[TrafficReading | RoadClosure]) -> bool:
        readings = [r for r in values if r.__class__ is TrafficReading]  # a closure needs no map
        return {r.segment_id for r in readings} <= self.reference.city.segments.keys() and (
            {r.approach_id for r in readings} - {None} <= self.reference.approaches.keys())

    def on_event(self, r: TrafficReading | RoadClosure, source: Source, effects: Effects) -> None:
        if isinstance(r, RoadClosure):
            return self.on_closure(r, effects)
        super().on_event(r, source, effects)

    def keys(self, r: TrafficReading) -> tuple[float, tuple[str, ...], str]:
        """A reading counts in its segment's window and its approach's, once per sensor and time."""
        if r.segment_id not in self.reference.city.segments:
            raise Rejected(f"unknown segment_id {r.segment_id!r}: not in the segments reference", "unknown_reference")
        reading = f"{r.sensor_id}@{r.event_time!r}"
        if r.approach_id is None:
            return r.event_time, ("segment:" + r.segment_id,), reading
        if r.approach_id not in self.reference.approaches:
            raise Rejected(f"unknown approach_id {r.approach_id!r}: in no intersection", "unknown_reference")
        if r.sampled:
            raise Rejected(f"a sampled count at approach {r.approach_id!r}: signal timing needs every vehicle counted")
        return r.event_time, ("segment:" + r.segment_id, "approach:" + r.approach_id), reading

    accumulate = staticmethod(fold_reading)

    def on_close(self, closed: list[tuple[str, float, Any]], effects: Effects) -> None:
        s, city = self.settings, self.reference.city
        latest: dict[str, SegmentWindow] = {}
        by_start: dict[float, list[SegmentWindow]] = defaultdict(list)
        for key, start, acc in closed:
            kind, ident = key.split(":", 1)
            junction = self.reference.approaches.get(ident) if kind == "approach" else None
            segment = city.segments.get(ident) if kind == "segment" else None
            if junction is not None:
                fed_by = next(a.segment_id for a in city.intersections[junction].approaches if a.approach_id == ident)
                # A road closed by water sends nothing into the junction: its phase gets no share.
                flow = 0.0 if self.is_closed(fed_by) else rounded(flow_vph(acc), 3)
                self.flows.append(ApproachFlow(junction, ident, start, flow))
                continue
            if segment is None:
                log.warning("window %s of %s dropped: %s was removed from the reference data", iso(start), key, ident)
                continue
            w = summarize(segment, start, acc, s, closed=self.is_closed(ident))
            latest[ident] = w
            by_start[start].append(w)
            if w.closed:
                continue  # closed, not congested: out of the ranking and congestion alerts
            before = self.watch.get(ident, FLOWING)
            watch, alert = step_congestion(before, w, segment, city.zones.get(segment.zone_id), s)
            if watch is not before:
                self.watch[ident] = watch
            if alert is not None:
                send_alert(alert, effects)
        for start, windows in sorted(by_start.items()):
            weighed = [(w.tpi, w.vehicle_km) for w in windows if w.vehicle_km is not None]  # samples have no vehicle-km
            vkm = sum(km for _, km in weighed)
            top = heapq.nlargest(s.traffic.ranking_size, ((w.tpi, w.segment_id) for w in windows if not w.closed))
            effects.send(
                topics.city_parts,
                "city",
                CityIndexPart(
                    self.partition, start, rounded(vkm, 4), rounded(sum(tpi * km for tpi, km in weighed), 4),
                    len(windows), [(seg, tpi) for tpi, seg in top],
                ),
            )
        self.segments.update(latest)
        open_roads = {k: w.tpi for k, w in latest.items() if not w.closed}
        if open_roads:
            self.ranking.update(open_roads)

    def gauges(self) -> metrics.Gauges:
        incidents = sum(1 for w in self.watch.values() if w.incident) + sum(1 for c in self.closed.values() if c.incident)
        return metrics.merge(super().gauges(), metrics.gauge("citybrain_active_incidents", incidents, "Transport"))

    def is_closed(self, segment_id: str) -> bool:
        closure = self.closed.get(segment_id)
        return closure is not None and bool(closure.points)


def step_closure(
    now: RoadClosed, was_closed: bool, c: RoadClosure, segment: Segment, zone: Zone | None, s: Settings
) -> tuple[RoadClosed, Alert | None]:
    """A road-closure incident opens with the first point closing the segment and is cancelled
    when the last one reopens it."""
    if bool(now.points) == was_closed:
        return now, None
    closing = bool(now.points)
    incident = now.incident or Incident(cap_id(f"closure.{segment.segment_id}.{int(c.at)}"))
    texts = {
        "zh-CN": (f"{segment.name}因积水封闭", f"{segment.name}积水{c.depth_cm:.0f}厘米，已达封路深度。",
                  "请勿驶入，按指示绕行。")
        if closing else (f"{segment.name}恢复通行", f"{segment.name}积水已消退。", "道路已恢复通行。"),
        "en-US": (f"Road closed: {segment.name}", f"Water on {segment.name} is {c.depth_cm:.0f} cm deep, over the closure line.",
                  "Do not drive in; follow the detour signs.")
        if closing else (f"Road reopened: {segment.name}", f"The water on {segment.name} has gone down.",
                         "The road is open again."),
    }
    parameters = [("segment_id", segment.segment_id), ("zone_id", segment.zone_id), ("point_id", c.point_id),
                  ("closed", "true" if closing else "false")]
    info = bilingual(texts, "Transport", "Road closure", "Avoid" if closing else "AllClear",
                     "Immediate" if closing else "Past", "Severe", "Observed", parameters, [road_area(segment, zone)])
    incident, alert = incident.message(s.cap, "Alert" if closing else "Cancel", c.at, info)
    return replace(now, incident=incident if closing else None), alert


class CityStage(Stage):
    """City-wide TPI per window (vehicle-km weighted) and the most congested segments.

    Traffic partitions close a window at different moments, so each part updates its window's
    index as it comes (a part is stored by window and partition: a resent part replaces itself).
    """

    name = "city"
    source = "city_parts"
    contract = CityIndexPart
    parts = GroupedTable(CityIndexPart, key=(float, int))  # by (window start, traffic partition)
    index = Table(CityIndex, restored=False)  # the city's index by window (ISO start)
    latest: Value[CityIndex | None] = Value(CityIndex, None, restored=False)  # the newest window's index
    ranking = Ranking()  # the newest window's most congested segments, by TPI

    def horizon(self) -> float:
        newest = max(self.parts.groups, default=-math.inf)
        return newest - self.settings.traffic.city_history_windows * self.settings.window_s

    def gauges(self) -> metrics.Gauges:
        newest = max(self.parts.groups, default=None)
        return {} if newest is None else metrics.gauge("citybrain_city_tpi",
                                                       city_index(newest, self.parts.group(newest).values()).tpi)

    def on_event(self, part: CityIndexPart, source: Source, effects: Effects) -> None:
        if part.window_start < self.horizon():
            effects.late(source, f"late: window {iso(part.window_start)} is past the city's history")
            return
        self.parts[part.window_start, part.partition] = part

    def flush(self, effects: Effects) -> None:
        newest = max(self.parts.groups, default=None)
        for start in sorted(self.parts.dirty_groups()):
            parts = self.parts.group(start).values()
            index = city_index(start, parts)
            self.index[iso(start)] = index
            if start == newest:
                self.latest = index
                # Ties go by segment id, as in each partition's top: the parts' arrival order,
                # which Kafka does not fix across partitions, must not pick the ranking.
                ranking = heapq.nlargest(self.settings.traffic.ranking_size, (x for p in parts for x in p.top),
                                         key=lambda x: (x[1], x[0]))
                self.ranking.replace(dict(ranking))
        for start in self.parts.drop_before(self.horizon()):
            self.index.discard(iso(start))


def city_index(start: float, parts: Iterable[CityIndexPart]) -> CityIndex:
    """The city's TPI for a window: partitions' TPIs weighted by their vehicle-km."""
    parts = list(parts)
    vkm = sum(p.vehicle_km for p in parts)
    tpi = sum(p.tpi_vehicle_km for p in parts) / vkm if vkm else 0.0
    return CityIndex(start, rounded(tpi, 3), congestion_level(tpi), rounded(vkm, 4), sum(p.segments for p in parts))


def signal_partition(intersection_id: str, partitions: int) -> int:
    """The signal partition that plans an intersection (stable across processes)."""
    return zlib.crc32(intersection_id.encode()) % partitions


class SignalsStage(Stage):
    """Per intersection: a window's approach flows, then a Webster plan.

    Approaches sit on segments of different traffic partitions, which report how far they have
    closed windows. A window's plan goes out at the report that makes every reporting partition
    pass it, naming approaches that sent nothing as missing; a flow that arrives later (a
    partition that started late) revises the plan, for `signal_revision_windows` windows.
    """

    name = "signals"
    source = "approach_flows"
    contract = FlowReport
    # By (window start, junction): the approaches' flows, and whether the plan went out since.
    windows = GroupedTable(dict, key=(float, str))
    plans = Table(SignalPlan)  # by junction: its newest plan
    upstream = Table(float, key=(int,), hash="final_through")  # by traffic partition: final through this window
    # Windows before this are gone. Only ever forward: a partition that reports for the first
    # time must not reopen them.
    pruned = Value(float, -math.inf)
    hashes = ("upstream",)  # where the previous version kept both, read once to carry them over

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        before = dict(hashes.get("upstream", {}))
        if before and not self.upstream:
            self.pruned = max(self.pruned, float(before.pop("pruned", "-inf")))
            for p, t in before.items():
                self.upstream[int(p)] = float(t)
        self.unplanned = {slot for slot, acc in self.windows.items() if not acc["sent"]}

    def final_through(self) -> float:
        """Windows starting at or before this are final on every traffic partition that reported."""
        return min(self.upstream.values(), default=-math.inf)

    def horizon(self) -> float:
        """Windows starting before this are past revision."""
        return max(self.pruned, self.final_through() - self.settings.signals.revision_windows * self.settings.window_s)

    def knows(self, report: FlowReport) -> bool:
        return all(f.intersection_id in self.reference.city.intersections for f in report.flows)

    def on_event(self, report: FlowReport, source: Source, effects: Effects) -> None:
        horizon = self.horizon()
        for f in report.flows:
            if f.intersection_id not in self.reference.city.intersections:
                effects.reject(source, Rejected(f"unknown intersection_id {f.intersection_id!r}", "unknown_reference"))
            elif f.window_start < horizon:
                effects.late(source, f"late: flow of {f.approach_id} for window {iso(f.window_start)} "
                                     f"is past revision (plans final through {iso(self.final_through())})")
            else:
                slot = (f.window_start, f.intersection_id)
                acc = self.windows.setdefault(slot, {"flows": {}, "sent": False})
                if acc["flows"].get(f.approach_id) != f.flow_vph:
                    acc["flows"][f.approach_id] = f.flow_vph
                    acc["sent"] = False  # (again) due once the window is final
                    self.unplanned.add(slot)
                    self.windows.touch(slot)
        if report.final_through > self.upstream.get(report.upstream_partition, -math.inf):
            self.upstream[report.upstream_partition] = report.final_through
        self.pruned = max(self.pruned, self.horizon())
        self.plan(effects)

    def plan(self, effects: Effects) -> None:
        """Send the plans of the windows that are now final on every reporting partition."""
        final = self.final_through()
        for start, junction_id in sorted(slot for slot in self.unplanned if slot[0] <= final):  # by window, then junction
            self.unplanned.discard((start, junction_id))
            acc = self.windows[start, junction_id]
            acc["sent"] = True
            self.windows.touch((start, junction_id))
            junction = self.reference.city.intersections.get(junction_id)
            if junction is None:
                log.warning("plan of %s for %s dropped: removed from the reference data", junction_id, iso(start))
                continue
            plan = webster(junction, acc["flows"], start, self.settings)
            effects.send(topics.signal_plans, junction_id, plan)
            newest = self.plans.get(junction_id)
            if newest is None or start >= newest.window_start:
                self.plans[junction_id] = plan

    def flush(self, effects: Effects) -> None:
        if self.windows.drop_before(self.pruned):
            self.unplanned = {slot for slot in self.unplanned if slot[0] >= self.pruned}


# ---------------------------------------------------------------------------------------------
# Agents

runtime.stage(TrafficStage)
runtime.stage(CityStage)
runtime.stage(SignalsStage)
