"""The traffic brain: road segment indicators, congestion alerts, city index and signal plans.

Three stages, each keyed so that what it combines lives on one partition:
  traffic.readings (by segment)        -> track_traffic  -> per-segment windows, alerts
  traffic.city_parts (one partition)   -> index_city     -> city-wide TPI and ranking
  traffic.approach_flows (by junction) -> plan_signals   -> Webster plans
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from schemas.contract import Rejected, iso
from schemas.events import TrafficReading
from schemas.records import (
    Alert,
    ApproachFlow,
    CityIndex,
    CityIndexPart,
    CongestionLevel,
    PhaseGreen,
    SegmentWindow,
    SignalPlan,
)
from schemas.reference import Intersection, Segment
from streams import metrics, runtime, topics
from streams.app import app
from streams.processor import Effects, Source, WindowedStage
from streams.settings import Settings, settings

LEVELS: tuple[CongestionLevel, ...] = ("free", "basically_free", "light", "moderate", "severe")

# ---------------------------------------------------------------------------------------------
# Rules (pure)


def delay_time_proportion(speed_kmh: float, free_flow_kmh: float) -> float:
    """DTP = 1 - v / v_free, within [0, 1] (GB/T 33171)."""
    return min(1.0, max(0.0, 1.0 - speed_kmh / free_flow_kmh))


def traffic_performance_index(dtp: float, bands: tuple[float, ...]) -> float:
    """TPI 0-10: band i of the DTP bands maps linearly onto [2i, 2i + 2]."""
    for i in range(len(bands) - 1, -1, -1):
        if dtp >= bands[i]:
            upper = bands[i + 1] if i + 1 < len(bands) else 1.0
            return min(10.0, 2 * i + 2 * (dtp - bands[i]) / (upper - bands[i]))
    return 0.0


def congestion_level(tpi: float) -> CongestionLevel:
    return LEVELS[min(len(LEVELS) - 1, int(tpi // 2))]


# A window's accumulator: [vehicles, speed x vehicles, occupancy x seconds, seconds, readings seen]
def fold_reading(acc: list | None, r: TrafficReading) -> list:
    """Add a reading to a window; a sensor's repeated reading (same time) counts once."""
    acc = acc or [0, 0.0, 0.0, 0.0, []]
    seen = f"{r.sensor_id}@{r.event_time!r}"
    if seen in acc[4]:
        return acc
    acc[0] += r.vehicle_count
    acc[1] += r.speed_kmh * r.vehicle_count
    acc[2] += r.occupancy * r.interval_s
    acc[3] += r.interval_s
    acc[4].append(seen)
    return acc


def flow_vph(acc: list) -> float:
    """Vehicles per hour over the seconds the detectors covered."""
    return 3600.0 * acc[0] / acc[3]


def summarize(segment: Segment, start: float, acc: list, s: Settings) -> SegmentWindow:
    """A segment's indicators for one window."""
    vehicles = acc[0]
    # With no vehicles counted the road is taken as free-flowing.
    speed = acc[1] / vehicles if vehicles else segment.free_flow_kmh
    dtp = delay_time_proportion(speed, segment.free_flow_kmh)
    tpi = traffic_performance_index(dtp, s.dtp_bands)
    flow = flow_vph(acc)
    return SegmentWindow(
        segment_id=segment.segment_id,
        zone_id=segment.zone_id,
        window_start=start,
        window_end=start + s.window_s,
        vehicles=vehicles,
        flow_vph=round(flow, 3),
        speed_kmh=round(speed, 3),
        occupancy=round(acc[2] / acc[3], 4),
        dtp=round(dtp, 4),
        tpi=round(tpi, 3),
        level=congestion_level(tpi),
        vehicle_km=round(flow * s.window_s / 3600.0 * segment.length_km, 4),
    )


@dataclass(frozen=True, slots=True)
class CongestionWatch:
    """Hysteresis state of one segment's congestion alert."""

    level: str | None = None  # the level under alert, or None
    run: int = 0  # windows in a row at moderate or worse, while not alerting
    calm: int = 0  # windows in a row below the clearing threshold, while alerting
    incident: str | None = None
    last_message: str | None = None
    step: int = 0


def step_congestion(
    watch: CongestionWatch, w: SegmentWindow, segment: Segment, s: Settings
) -> tuple[CongestionWatch, Alert | None]:
    """Advance a segment's alert by one window: raise after N windows, escalate, clear with margin."""
    level = "severe" if w.tpi >= s.congestion_severe_tpi else "moderate" if w.tpi >= s.congestion_moderate_tpi else None
    if watch.level is None:
        run = watch.run + 1 if level else 0
        if run < s.congestion_raise_windows:
            return replace(watch, run=run), None
        incident = f"citybrain.congestion.{segment.segment_id}.{int(w.window_start)}"
        watch = CongestionWatch(level=level, incident=incident)
        return _message(watch, w, segment, "Alert")
    if w.tpi < s.congestion_moderate_tpi - s.congestion_clear_margin_tpi:
        calm = watch.calm + 1
        if calm >= s.congestion_clear_windows:
            _, alert = _message(replace(watch, calm=calm), w, segment, "Cancel")
            return CongestionWatch(), alert
        return replace(watch, calm=calm), None
    if watch.level == "moderate" and level == "severe":
        return _message(replace(watch, level=level, calm=0), w, segment, "Update")
    return replace(watch, calm=0), None


def _message(watch: CongestionWatch, w: SegmentWindow, segment: Segment, msg_type: str) -> tuple[CongestionWatch, Alert]:
    identifier = f"{watch.incident}.{watch.step}"
    cleared = msg_type == "Cancel"
    headline = (
        f"Congestion cleared on {segment.name} (TPI {w.tpi:.1f})"
        if cleared
        else f"{watch.level.capitalize()} congestion on {segment.name} (TPI {w.tpi:.1f})"
    )
    alert = Alert(
        identifier=identifier,
        incident=watch.incident,
        msg_type=msg_type,
        references=watch.last_message,
        sent=w.window_end,
        category="Transport",
        event="congestion",
        severity="Severe" if watch.level == "severe" else "Moderate",
        urgency="Past" if cleared else "Immediate",
        certainty="Observed",
        zone_id=segment.zone_id,
        subject_id=segment.segment_id,
        level="cleared" if cleared else watch.level,
        value=w.tpi,
        headline=headline,
    )
    return replace(watch, last_message=identifier, step=watch.step + 1), alert


def webster(intersection: Intersection, flows: dict[str, float], window_start: float, s: Settings) -> SignalPlan:
    """Webster's optimum cycle and green splits from one window's approach flows.

    y of an approach = q / (s x lanes); a phase's critical y is its approaches' max; Y = sum of
    phases' y; L = lost time per phase x phases; C0 = (1.5 L + 5) / (1 - Y), clamped; green of
    a phase = (y / Y)(C0 - L). At Y >= the oversaturation limit no cycle is computed.
    """
    phase_y: dict[str, float] = {}
    for a in intersection.approaches:
        saturation = (a.saturation_flow_vphpl or s.saturation_flow_vphpl) * a.lanes
        y = flows.get(a.approach_id, 0.0) / saturation
        phase_y[a.phase] = max(phase_y.get(a.phase, 0.0), y)
    total_y = sum(phase_y.values())
    lost = intersection.lost_time_per_phase_s * len(phase_y)
    if total_y >= s.oversaturated_flow_ratio:
        return SignalPlan(
            intersection.intersection_id, window_start, round(total_y, 4), lost, True, None,
            [PhaseGreen(p, round(y, 4), 0.0) for p, y in phase_y.items()],
        )
    cycle = min(s.cycle_max_s, max(s.cycle_min_s, (1.5 * lost + 5) / (1 - total_y)))
    effective = cycle - lost
    phases = [
        PhaseGreen(p, round(y, 4), round(effective * (y / total_y if total_y else 1 / len(phase_y)), 2))
        for p, y in phase_y.items()
    ]
    return SignalPlan(intersection.intersection_id, window_start, round(total_y, 4), lost, False, round(cycle, 2), phases)


# ---------------------------------------------------------------------------------------------
# Stages


def _json(record: Any) -> str:
    return orjson.dumps(asdict(record)).decode()


class SegmentStage(WindowedStage):
    """Per road segment: windowed indicators, latest state, ranking and congestion alerts."""

    name = "traffic"
    contract = TrafficReading
    hashes = ("meta", "open", "watch")

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        super().restore(hashes)
        self.watch = {k: CongestionWatch(**orjson.loads(v)) for k, v in hashes.get("watch", {}).items()}

    def knows(self, r: TrafficReading) -> bool:
        return r.segment_id in self.reference.city.segments and (
            r.approach_id is None or r.approach_id in self.reference.approaches
        )

    def on_event(self, r: TrafficReading, source: Source, effects: Effects) -> None:
        if r.segment_id not in self.reference.city.segments:
            raise Rejected(f"unknown segment_id {r.segment_id!r}: not in the segments reference", "unknown_reference")
        if r.approach_id is not None and r.approach_id not in self.reference.approaches:
            raise Rejected(f"unknown approach_id {r.approach_id!r}: in no intersection", "unknown_reference")
        fold = lambda acc: fold_reading(acc, r)  # noqa: E731
        if self.fold(f"segment:{r.segment_id}", r.event_time, fold, source, effects) and r.approach_id:
            self.fold(f"approach:{r.approach_id}", r.event_time, fold, source, effects)

    def on_close(self, closed: list[tuple[str, float, Any]], effects: Effects) -> None:
        s, city = self.settings, self.reference.city
        latest: dict[str, SegmentWindow] = {}
        by_start: dict[float, list[SegmentWindow]] = defaultdict(list)
        watch_changes: dict[str, CongestionWatch] = {}
        for key, start, acc in closed:
            kind, ident = key.split(":", 1)
            if kind == "approach":
                junction = self.reference.approaches[ident]
                effects.send(topics.approach_flows, junction, ApproachFlow(junction, ident, start, round(flow_vph(acc), 3)))
                continue
            segment = city.segments[ident]
            w = summarize(segment, start, acc, s)
            latest[ident] = w
            by_start[start].append(w)
            watch, alert = step_congestion(watch_changes.get(ident) or self.watch.get(ident, CongestionWatch()), w, segment, s)
            watch_changes[ident] = watch
            if alert is not None:
                metrics.ALERTS.labels(alert.category, alert.severity, alert.msg_type).inc()
                effects.send(topics.alerts, alert.incident, alert)
        for start, windows in sorted(by_start.items()):
            vkm = sum(w.vehicle_km for w in windows)
            top = heapq.nlargest(s.ranking_size, ((w.tpi, w.segment_id) for w in windows))
            effects.send(
                topics.city_parts,
                "city",
                CityIndexPart(
                    self.partition, start, round(vkm, 4), round(sum(w.tpi * w.vehicle_km for w in windows), 4),
                    len(windows), [(seg, tpi) for tpi, seg in top],
                ),
            )
        if latest:
            effects.batch.hset("segments", {k: _json(w) for k, w in latest.items()})
            effects.batch.zadd("ranking", {k: w.tpi for k, w in latest.items()})
        if watch_changes:
            self.watch.update(watch_changes)
            effects.batch.hset("watch", {k: _json(v) for k, v in watch_changes.items()})


class CityStage(WindowedStage):
    """City-wide TPI per window (vehicle-km weighted) and the most congested segments."""

    name = "city"
    contract = CityIndexPart
    hashes = ("meta", "open")

    def grace_s(self) -> float:
        # Parts of a window arrive as each traffic partition closes it: allow them a window.
        return self.settings.window_s + self.settings.grace_s

    def on_event(self, part: CityIndexPart, source: Source, effects: Effects) -> None:
        def fold(acc: dict | None) -> dict:
            acc = acc or {}
            acc[str(part.partition)] = [part.vehicle_km, part.tpi_vehicle_km, part.segments, part.top]
            return acc

        self.fold("city", part.window_start, fold, source, effects)

    def on_close(self, closed: list[tuple[str, float, Any]], effects: Effects) -> None:
        for _, start, parts in closed:
            index = city_index(start, parts.values())
            ranking = heapq.nlargest(self.settings.ranking_size, (item for p in parts.values() for item in p[3]), key=lambda x: x[1])
            effects.batch.hset("index", {iso(start): _json(index)})
            effects.batch.set("latest", _json(index))
            effects.batch.delete("ranking")
            if ranking:
                effects.batch.zadd("ranking", {seg: tpi for seg, tpi in ranking})


def city_index(start: float, parts: Any) -> CityIndex:
    """Combine partitions' [vehicle_km, tpi x vehicle_km, segments, top] into the city's TPI."""
    vkm = sum(p[0] for p in parts)
    weighted = sum(p[1] for p in parts)
    tpi = weighted / vkm if vkm else 0.0
    return CityIndex(start, round(tpi, 3), congestion_level(tpi), round(vkm, 4), sum(p[2] for p in parts))


class SignalStage(WindowedStage):
    """Per intersection: gathers a window's approach flows, then publishes a Webster plan."""

    name = "signals"
    contract = ApproachFlow
    hashes = ("meta", "open")

    def grace_s(self) -> float:
        return self.settings.window_s + self.settings.grace_s

    def knows(self, f: ApproachFlow) -> bool:
        return f.intersection_id in self.reference.city.intersections

    def on_event(self, f: ApproachFlow, source: Source, effects: Effects) -> None:
        if f.intersection_id not in self.reference.city.intersections:
            raise Rejected(f"unknown intersection_id {f.intersection_id!r}", "unknown_reference")

        def fold(acc: dict | None) -> dict:
            acc = acc or {}
            acc[f.approach_id] = f.flow_vph
            return acc

        self.fold(f.intersection_id, f.window_start, fold, source, effects)

    def on_close(self, closed: list[tuple[str, float, Any]], effects: Effects) -> None:
        plans = {}
        for junction, start, flows in closed:
            plan = webster(self.reference.city.intersections[junction], flows, start, self.settings)
            plans[junction] = _json(plan)
            effects.send(topics.signal_plans, junction, plan)
        effects.batch.hset("plans", plans)


# ---------------------------------------------------------------------------------------------
# Agents

_s = settings()
segments = runtime.processor(SegmentStage, topics.traffic_readings.get_topic_name())
city = runtime.processor(CityStage, topics.city_parts.get_topic_name())
signals = runtime.processor(SignalStage, topics.approach_flows.get_topic_name())


@app.agent(topics.traffic_readings)
async def track_traffic(stream):
    async for events in stream.take_events(_s.batch_max, _s.batch_within_s):
        await segments.process(events)


@app.agent(topics.city_parts)
async def index_city(stream):
    async for events in stream.take_events(_s.batch_max, _s.batch_within_s):
        await city.process(events)


@app.agent(topics.approach_flows)
async def plan_signals(stream):
    async for events in stream.take_events(_s.batch_max, _s.batch_within_s):
        await signals.process(events)

