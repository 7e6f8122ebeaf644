"""Reference data: the city's fixed geography, published on compacted topics keyed by id."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Literal

from schemas.contract import bounded, contract

LatLon = tuple[float, float]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))

RoadClass = Literal["expressway", "arterial", "secondary", "local"]
PointKind = Literal["underpass", "culvert", "underground_passage", "road_dip", "underground_garage"]
VenueKind = Literal["shop", "station", "office", "school", "hospital", "shelter"]


@contract
class Zone:
    """A district or community; the unit of area alerts and zone-level views."""

    zone_id: str
    name: str
    polygon: list[LatLon]  # closed ring of (lat, lon), first point equal to last
    other_parts: list[list[LatLon]] = field(default_factory=list)  # a zone in several pieces: its other rings

    @property
    def rings(self) -> list[list[LatLon]]:
        """The ring of every piece of the zone, the main one first."""
        return [ring for ring in (self.polygon, *self.other_parts) if ring]


@contract
class Segment:
    """A directed road link between two junctions."""

    segment_id: str
    name: str
    zone_id: str
    road_class: RoadClass
    length_km: float = bounded(0.001, 100)
    free_flow_kmh: float = bounded(1, 200)
    lanes: int = bounded(1, 12, default=2)


@contract
class Approach:
    """One signal-controlled approach into an intersection, fed by a segment."""

    approach_id: str
    segment_id: str
    phase: str  # approaches in one phase share green; the phase's critical flow is their max
    lanes: int = bounded(1, 8)
    saturation_flow_vphpl: float | None = bounded(100, 3000, default=None)


@contract
class Intersection:
    """A signalised junction and its approaches."""

    intersection_id: str
    name: str
    zone_id: str
    approaches: list[Approach]
    lost_time_per_phase_s: float = bounded(0, 20, default=4.0)


@contract
class WaterloggingPoint:
    """A low point prone to waterlogging, with a depth sensor."""

    point_id: str
    name: str
    zone_id: str
    segment_id: str | None
    lat: float = bounded(-90, 90)
    lon: float = bounded(-180, 180)
    kind: PointKind = "road_dip"


@contract
class RainGauge:
    """A rain gauge and the zone it measures."""

    gauge_id: str
    zone_id: str
    lat: float = bounded(-90, 90)
    lon: float = bounded(-180, 180)


@contract
class Lot:
    """An off-street car park."""

    lot_id: str
    name: str
    zone_id: str
    capacity: int = bounded(1, 100_000)
    underground: bool = False
    tariff_per_hour_cny: float = bounded(0, 1000, default=5.0)
    lat: float = bounded(-90, 90, default=0.0)
    lon: float = bounded(-180, 180, default=0.0)

    @property
    def placed(self) -> bool:
        """Whether the lot's coordinates were given (0,0 is a lot without them)."""
        return bool(self.lat or self.lon)


@contract
class Venue:
    """A place where health codes are scanned: shops, stations, shelters."""

    venue_id: str
    name: str
    zone_id: str
    kind: VenueKind = "shop"
    capacity: int = bounded(0, 1_000_000, default=0)
    lat: float = bounded(-90, 90, default=0.0)
    lon: float = bounded(-180, 180, default=0.0)


@contract
class CityMap:
    """All reference data, by id."""

    zones: dict[str, Zone] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    intersections: dict[str, Intersection] = field(default_factory=dict)
    points: dict[str, WaterloggingPoint] = field(default_factory=dict)
    gauges: dict[str, RainGauge] = field(default_factory=dict)
    lots: dict[str, Lot] = field(default_factory=dict)
    venues: dict[str, Venue] = field(default_factory=dict)
