"""A deterministic synthetic city and the scenarios that bring it to life.

`build_city(seed)` lays out zones, road segments, signalised intersections, waterlogging points,
rain gauges, car parks and venues around a centre. A scenario is a generator of
(event_time, topic role, key, record) in event-time order; `citybrain simulate` publishes the
city's reference data and then the scenario's events at a chosen time acceleration.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from schemas.contract import encode, iso
from schemas.events import (
    CitizenFloodReport,
    HealthCodeScan,
    HealthCodeStatusChange,
    ParkingEvent,
    RainGaugeReading,
    TrafficReading,
    WaterDepthReading,
)
from schemas.records import Colour
from schemas.reference import (
    Approach,
    CityMap,
    Intersection,
    Lot,
    PointKind,
    RainGauge,
    RoadClass,
    Segment,
    Venue,
    VenueKind,
    WaterloggingPoint,
    Zone,
)
from streams.settings import Settings
from streams.tools.feed import Publisher
from streams.topics import REFERENCE

CENTRE = (30.25, 120.16)  # lat, lon
ZONE_SIZE_DEG = 0.02
STREETS = ("Yan'an", "Jiefang", "Fengqi", "Qingchun", "Zhongshan", "Huansha", "Moganshan", "Wensan",
           "Tianmushan", "Hushu", "Jianguo", "Qiutao", "Xixi", "Binsheng", "Jiangnan", "Shixiang")
ROAD_CLASSES: tuple[tuple[RoadClass, float, int], ...] = (
    ("expressway", 80.0, 3), ("arterial", 50.0, 3), ("arterial", 50.0, 2), ("secondary", 40.0, 2),
                ("secondary", 40.0, 2), ("local", 30.0, 1))


def build_city(seed: int = 7, zones_per_side: int = 3, segments_per_zone: int = 12) -> CityMap:
    """A reproducible city: same seed, same city."""
    rng = random.Random(seed)
    city = CityMap()
    for row in range(zones_per_side):
        for col in range(zones_per_side):
            zone_id = f"Z{row}{col}"
            lat0 = CENTRE[0] + (row - zones_per_side / 2) * ZONE_SIZE_DEG
            lon0 = CENTRE[1] + (col - zones_per_side / 2) * ZONE_SIZE_DEG
            ring = [(lat0, lon0), (lat0, lon0 + ZONE_SIZE_DEG), (lat0 + ZONE_SIZE_DEG, lon0 + ZONE_SIZE_DEG),
                    (lat0 + ZONE_SIZE_DEG, lon0), (lat0, lon0)]
            city.zones[zone_id] = Zone(zone_id, f"District {zone_id}", [(round(a, 5), round(b, 5)) for a, b in ring])

            def spot(lat0: float = lat0, lon0: float = lon0) -> tuple[float, float]:
                return (round(lat0 + rng.random() * ZONE_SIZE_DEG, 5), round(lon0 + rng.random() * ZONE_SIZE_DEG, 5))

            segs = []
            for i in range(segments_per_zone):
                road_class, free_flow, lanes = ROAD_CLASSES[i % len(ROAD_CLASSES)]
                seg = Segment(
                    segment_id=f"{zone_id}-S{i:02d}",
                    name=f"{rng.choice(STREETS)} Rd ({zone_id}-{i:02d})",
                    zone_id=zone_id,
                    road_class=road_class,
                    length_km=round(rng.uniform(0.3, 2.0), 3),
                    free_flow_kmh=free_flow,
                    lanes=lanes,
                )
                city.segments[seg.segment_id] = seg
                segs.append(seg)
            # Two junctions per zone, fed by arterial and secondary segments (never the expressway).
            feeders = [s for s in segs if s.road_class in ("arterial", "secondary")]
            for j in range(2):
                legs = feeders[j * 4 : j * 4 + 4]
                if len(legs) < 4:
                    break
                junction_id = f"{zone_id}-J{j}"
                city.intersections[junction_id] = Intersection(
                    intersection_id=junction_id,
                    name=f"{legs[0].name.split(' Rd')[0]} x {legs[2].name.split(' Rd')[0]}",
                    zone_id=zone_id,
                    approaches=[
                        Approach(f"{junction_id}-{leg}", s.segment_id, phase, s.lanes)
                        for leg, s, phase in zip(("N", "S", "E", "W"), legs, ("NS", "NS", "EW", "EW"))
                    ],
                )
            point_kinds: tuple[PointKind, ...] = ("underpass", "road_dip")
            for k, kind in enumerate(point_kinds):
                lat, lon = spot()
                point_id = f"{zone_id}-P{k}"
                city.points[point_id] = WaterloggingPoint(point_id, f"{kind.replace('_', ' ')} {point_id}", zone_id,
                                                          segs[k].segment_id, lat, lon, kind)
            lat, lon = spot()
            city.gauges[f"{zone_id}-G0"] = RainGauge(f"{zone_id}-G0", zone_id, lat, lon)
            for k, underground in enumerate((True, False)):
                lat, lon = spot()
                lot_id = f"{zone_id}-L{k}"
                city.lots[lot_id] = Lot(lot_id, f"{'Underground' if underground else 'Surface'} car park {lot_id}",
                                        zone_id, rng.choice((120, 200, 350)), underground, 5.0 if underground else 3.0,
                                        lat, lon)
            venue_kinds: tuple[VenueKind, ...] = ("shop", "station", "shelter")
            for k, venue_kind in enumerate(venue_kinds):
                lat, lon = spot()
                venue_id = f"{zone_id}-V{k}"
                city.venues[venue_id] = Venue(venue_id, f"{venue_kind} {venue_id}", zone_id, venue_kind,
                                              800 if venue_kind == "shelter" else 0, lat, lon)
    return city


def reference_records(city: CityMap) -> Iterator[tuple[str, str, Any]]:
    """(topic role, key, record) for every piece of reference data."""
    for role in REFERENCE:
        for key, record in getattr(city, role).items():
            yield role, key, record


@dataclass(frozen=True)
class RushHour:
    """A morning peak: demand swells and ebbs; some roads jam badly, some moderately.

    Each segment's detector reports every `interval_s`. A segment's congestion share (0: normal,
    1: moderate hot spot, 2: severe hot spot) is drawn from the seed, so the same seed jams the
    same roads.
    """

    city: CityMap
    start: float  # event time of the first reading
    duration_s: float = 3600.0
    interval_s: float = 30.0
    seed: int = 7

    def hot_spots(self) -> dict[str, int]:
        rng = random.Random(self.seed * 31 + 1)
        approach_segments = {a.segment_id for j in self.city.intersections.values() for a in j.approaches}
        spots = {}
        for seg_id in sorted(self.city.segments):
            draw = rng.random()
            # Intersection approaches stay moderate at worst so signal plans stay computable.
            spots[seg_id] = 2 if draw < 0.12 and seg_id not in approach_segments else 1 if draw < 0.27 else 0
        return spots

    def demand(self, t: float) -> float:
        """0-1: how far into the peak the city is at event time t."""
        u = (t - self.start) / self.duration_s
        return math.exp(-(((u - 0.5) / 0.2) ** 2))

    def events(self) -> Iterator[tuple[float, str, str, Any]]:
        rng = random.Random(self.seed)
        spots = self.hot_spots()
        approach_of = {a.segment_id: a.approach_id for j in self.city.intersections.values() for a in j.approaches}
        steps = int(self.duration_s // self.interval_s)
        for k in range(1, steps + 1):
            t = self.start + k * self.interval_s
            peak = self.demand(t)
            for seg in self.city.segments.values():
                slowdown = (0.3, 0.62, 0.85)[spots[seg.segment_id]] * peak
                speed_ratio = max(0.03, 1.0 - slowdown + rng.uniform(-0.02, 0.02))
                load = 0.15 + (0.2 if seg.segment_id in approach_of else 0.5) * peak
                flow = seg.lanes * 1800.0 * load
                count = max(0, round(rng.gauss(flow * self.interval_s / 3600.0, 1.0)))
                yield t, "traffic_readings", seg.segment_id, TrafficReading(
                    sensor_id=f"DET-{seg.segment_id}",
                    segment_id=seg.segment_id,
                    event_time=t,
                    vehicle_count=count,
                    interval_s=self.interval_s,
                    speed_kmh=round(seg.free_flow_kmh * speed_ratio, 2),
                    occupancy=round(min(0.95, 0.04 + 0.85 * slowdown), 3),
                    approach_id=approach_of.get(seg.segment_id),
                )


@dataclass(frozen=True)
class Rainstorm:
    """A summer storm crossing the city from west to east.

    Each zone's rain swells and eases (northern zones hardest: enough for a red signal), gauges
    report every 5 minutes, water at each low point follows its zone's last half hour of rain
    (underpasses fill faster), one depth sensor fails and then falls silent, residents report deep
    water near the points and where nothing is monitored, and traffic slows where roads flood.
    """

    city: CityMap
    start: float
    duration_s: float = 7200.0
    interval_s: float = 30.0
    seed: int = 7

    def rain_5min(self, zone_id: str, t: float) -> float:
        row, col = int(zone_id[1]), int(zone_id[2])
        peak = (12.0, 7.0, 4.0)[row % 3]
        onset = self.start + 600.0 * col
        return round(peak * math.exp(-(((t - onset - 1800.0) / 1500.0) ** 2)), 2)

    def depth_cm(self, point: WaterloggingPoint, t: float) -> float:
        last_half_hour = sum(self.rain_5min(point.zone_id, t - 300.0 * k) for k in range(6))
        speed = 1.6 if point.kind == "underpass" else 1.0
        return round(min(150.0, speed * last_half_hour), 1)

    def failing_point(self) -> str:
        return sorted(self.city.points)[len(self.city.points) // 2]

    def events(self) -> Iterator[tuple[float, str, str, Any]]:
        return heapq.merge(self.weather_and_roads(), self.people_and_cars(), key=lambda e: e[0])

    def red_at(self, zone_id: str) -> float | None:
        """When the zone's gauge first shows 100 mm in 3 hours: the red signal, and its evacuation."""
        for m in range(1, int(self.duration_s // 300) + 1):
            t = self.start + 300.0 * m
            if sum(self.rain_5min(zone_id, t - 300.0 * k) for k in range(min(36, m))) >= 100:
                return t
        return None

    def people_and_cars(self) -> Iterator[tuple[float, str, str, Any]]:
        """Residents registered in their zones scanning at venues, cars parked (underground too),
        leaving and paying later, a surface car park filling up, and residents of zones ordered
        to evacuate checking in at a shelter in the next row of zones."""
        rng = random.Random(self.seed * 13 + 5)
        out: list[tuple[float, str, str, Any]] = []
        venues = {z: [v for v in self.city.venues.values() if v.zone_id == z] for z in self.city.zones}
        for zi, zone_id in enumerate(sorted(self.city.zones)):
            red_at = self.red_at(zone_id)
            row, col = int(zone_id[1]), int(zone_id[2])
            refuge = next((v for v in venues.get(f"Z{row + 1}{col}", []) if v.kind == "shelter"), None)
            for n in range(RESIDENTS_PER_ZONE):
                person = f"330106{1960 + n % 40}{n % 12 + 1:02d}{n % 28 + 1:02d}{zi}{n:02d}{n % 10}"
                draw = rng.random()
                colour: Colour = "red" if draw < 0.04 else "yellow" if draw < 0.12 else "green"
                t = self.start + 10.0
                out.append((t, "health_status", person, HealthCodeStatusChange(person, colour, t, "registered", zone_id)))
                for m in range(1, int(self.duration_s // 600) + 1):  # now and then, a scan at a venue nearby
                    t = self.start + 600.0 * m - rng.uniform(0, 600)
                    if rng.random() < 0.15 and (red_at is None or t < red_at):
                        venue = rng.choice([v for v in venues[zone_id] if v.kind != "shelter"])
                        out.append((t, "health_scans", venue.venue_id,
                                    HealthCodeScan(f"SC-{zone_id}-{n}-{m}", person, venue.venue_id, t)))
                if red_at is not None and refuge is not None and rng.random() < 0.7:
                    t = red_at + rng.uniform(300, 1200)
                    out.append((t, "health_scans", refuge.venue_id, HealthCodeScan(f"SC-{zone_id}-{n}-shelter", person,
                                                                                     refuge.venue_id, t)))
        for li, lot in enumerate(sorted(self.city.lots.values(), key=lambda lot: lot.lot_id)):
            filling = lot.lot_id == "Z11-L1"  # a surface car park that fills up during the storm
            parked = int(lot.capacity * (0.85 if filling else 0.5 if lot.underground else 0.3))
            for n in range(lot.capacity if filling else parked):
                plate = f"浙A{li:02d}{n:03d}"
                t = self.start + (rng.uniform(0, 300) if n < parked else 900 + 20.0 * (n - parked))
                out.append((t, "parking_events", lot.lot_id, ParkingEvent(f"{lot.lot_id}-in-{n}", lot.lot_id, plate, "entry", t)))
                if not filling and rng.random() < 0.25:  # leaves later, and pays after leaving
                    t_out = t + rng.uniform(1200, self.duration_s)
                    if t_out < self.start + self.duration_s:
                        out.append((t_out, "parking_events", lot.lot_id,
                                    ParkingEvent(f"{lot.lot_id}-out-{n}", lot.lot_id, plate, "exit", t_out)))
        # Barrier feeds are dirty: an entry read twice, and an exit the lot never saw enter.
        first = min((e for e in out if e[1] == "parking_events"), key=lambda e: e[0])
        out.append((first[0] + 1, *first[1:]))
        lot = next(iter(self.city.lots.values()))
        out.append((self.start + 1200, "parking_events", lot.lot_id,
                    ParkingEvent(f"{lot.lot_id}-out-stray", lot.lot_id, "浙B00000", "exit", self.start + 1200)))
        out = [e for e in out if e[0] <= self.start + self.duration_s]
        return iter(sorted(out, key=lambda e: e[0]))

    def weather_and_roads(self) -> Iterator[tuple[float, str, str, Any]]:
        rng = random.Random(self.seed)
        broken = self.failing_point()
        flooded_at = {p.segment_id: p for p in self.city.points.values() if p.segment_id}
        steps = int(self.duration_s // self.interval_s)
        for k in range(1, steps + 1):
            t = self.start + k * self.interval_s
            if k % 10 == 0:  # every 5 minutes
                for gauge in self.city.gauges.values():
                    yield t, "rain_readings", gauge.gauge_id, RainGaugeReading(
                        gauge.gauge_id, t, self.rain_5min(gauge.zone_id, t), 300.0)
            if k % 2 == 0:  # every minute
                for point in self.city.points.values():
                    depth = self.depth_cm(point, t)
                    if point.point_id == broken and t - self.start > 2400:
                        if t - self.start > 3000:
                            continue  # the sensor has gone silent
                        depth = -999.0  # and before that, nonsense
                    yield t, "water_depths", point.point_id, WaterDepthReading(f"WL-{point.point_id}", point.point_id, t, depth)
            if k % 20 == 0:  # every 10 minutes, residents report what they see
                for point in self.city.points.values():
                    depth = self.depth_cm(point, t)
                    if depth >= 20:  # a few dozen metres from a monitored point
                        yield t, "flood_reports", f"R-{point.point_id}-{k}", CitizenFloodReport(
                            f"R-{point.point_id}-{k}", t, round(point.lat + 0.0003, 5), point.lon, depth,
                            f"1390000{rng.randrange(10_000):04d}", "积水很深 deep water here")
                zone = next(iter(self.city.zones.values()))
                if self.rain_5min(zone.zone_id, t) >= 6:  # and where nothing is monitored
                    lat, lon = zone.polygon[0][0] + 0.001, zone.polygon[0][1] + 0.001
                    yield t, "flood_reports", f"R-{zone.zone_id}-{k}", CitizenFloodReport(
                        f"R-{zone.zone_id}-{k}", t, lat, lon, None, None, "road flooded near the market")
            for seg in self.city.segments.values():
                flooded = flooded_at.get(seg.segment_id)
                depth = self.depth_cm(flooded, t) if flooded else 0.0
                ratio = 0.15 if depth >= 27 else 0.45 if depth >= 20 else 0.8 if depth >= 15 else 0.95
                count = max(0, round(rng.gauss(seg.lanes * 1800.0 * 0.3 * self.interval_s / 3600.0, 1.0)))
                yield t, "traffic_readings", seg.segment_id, TrafficReading(
                    f"DET-{seg.segment_id}", seg.segment_id, t, count, self.interval_s,
                    round(seg.free_flow_kmh * ratio * rng.uniform(0.97, 1.03), 2), round(min(0.95, 1.05 - ratio), 3),
                )


SCENARIOS: dict[str, type[RushHour] | type[Rainstorm]] = {"rush-hour": RushHour, "rainstorm": Rainstorm}
RESIDENTS_PER_ZONE = 40


def dirty_readings(city: CityMap, start: float, interval_s: float) -> list[tuple[str, str, bytes]]:
    """What real feeds also carry: a truncated message, an impossible speed, a very late reading."""
    seg = next(iter(city.segments.values()))
    late = TrafficReading(f"DET-{seg.segment_id}", seg.segment_id, start + interval_s, 3, interval_s, 42.0, 0.1)
    return [
        ("traffic_readings", seg.segment_id, b'{"sensor_id": "DET-broken", "segment_id": '),
        ("traffic_readings", seg.segment_id, encode(replace(late, speed_kmh=-5.0))),
        ("traffic_readings", seg.segment_id, encode(late)),
    ]


async def run_scenario(
    settings: Settings, name: str, duration_s: float, accel: float, seed: int, dirty: bool, say: Callable[[str], None]
) -> int:
    """Publish the city's reference data, then the scenario's events paced by `accel`."""
    city = build_city(seed)
    # Event time ends before the wall clock: windows close on event time, and a silent
    # partition's timer takes the wall clock as its event time.
    start = math.floor((time.time() - duration_s - 2 * settings.window_s) / settings.window_s) * settings.window_s
    if name not in SCENARIOS:
        raise SystemExit(f"no scenario {name!r}; one of: {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[name](city, start, duration_s, seed=seed)
    events = list(scenario.events())
    extras = dirty_readings(city, start, scenario.interval_s) if dirty else []
    async with Publisher(settings) as pub:
        for role, key, record in reference_records(city):
            await pub.send(role, key, record)
        await pub.flush()
        say(f"simulate: city of {len(city.zones)} zones, {len(city.segments)} segments, "
            f"{len(city.intersections)} intersections published; {len(events)} {name} events from {iso(start)}")
        wall0, next_report = time.monotonic(), start
        for i, (t, role, key, record) in enumerate(events):
            if accel > 0:
                delay = wall0 + (t - start) / accel - time.monotonic()
                if delay > 0:
                    await pub.flush()
                    await asyncio.sleep(delay)
            await pub.send(role, key, record)
            if extras and i == len(events) // 2:
                for role_, key_, raw in extras:
                    await pub.send_raw(role_, key_, raw)
            if t >= next_report:
                say(f"simulate: event time {iso(t)}, {pub.sent} events sent")
                next_report = t + 600
    return pub.sent
