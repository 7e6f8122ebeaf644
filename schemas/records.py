"""Records the city brain produces: live state, alerts, signal plans, dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.contract import EventTime

CongestionLevel = Literal["free", "basically_free", "light", "moderate", "severe"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be used, with where it came from and why.

    Also the shape of late events, which go to a topic of their own to be reprocessed or audited.
    """

    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: str  # the original bytes as UTF-8, or base64 when they are not text
    raw_encoding: Literal["utf-8", "base64"]
    received_at: EventTime
    key: str | None = None


@dataclass(frozen=True, slots=True)
class SegmentWindow:
    """A road segment's traffic over one event-time window (GB/T 33171 indicators)."""

    segment_id: str
    zone_id: str
    window_start: EventTime
    window_end: EventTime
    vehicles: int
    flow_vph: float
    speed_kmh: float  # volume-weighted mean speed
    occupancy: float
    dtp: float  # delay time proportion, 1 - v / v_free
    tpi: float  # 0-10
    level: CongestionLevel
    vehicle_km: float
    closed: bool = False  # closed by waterlogging: out of the congestion ranking


@dataclass(frozen=True, slots=True)
class CityIndexPart:
    """One partition's share of the city-wide TPI for a window, and its most congested segments."""

    partition: int
    window_start: EventTime
    vehicle_km: float
    tpi_vehicle_km: float
    segments: int
    top: list[tuple[str, float]]  # (segment_id, tpi), worst first


@dataclass(frozen=True, slots=True)
class CityIndex:
    """The city-wide TPI for a window, weighted by vehicle-km."""

    window_start: EventTime
    tpi: float
    level: CongestionLevel
    vehicle_km: float
    segments: int


@dataclass(frozen=True, slots=True)
class ApproachFlow:
    """Flow on one intersection approach over a window."""

    intersection_id: str
    approach_id: str
    window_start: EventTime
    flow_vph: float


@dataclass(frozen=True, slots=True)
class FlowReport:
    """What one traffic partition tells one signal partition after a batch.

    `final_through` carries the traffic partition's progress: no flow for a window starting at
    or before it will ever follow. A signal plan goes out once every reporting traffic partition
    has passed its window, so plans never depend on how fast partitions ran.
    """

    upstream_partition: int
    final_through: EventTime
    flows: list[ApproachFlow]


@dataclass(frozen=True, slots=True)
class PhaseGreen:
    phase: str
    flow_ratio: float  # critical q/s of the phase
    green_s: float


@dataclass(frozen=True, slots=True)
class SignalPlan:
    """A Webster fixed-time plan for an intersection from one window's approach flows."""

    intersection_id: str
    window_start: EventTime
    flow_ratio_total: float  # Y
    lost_time_s: float  # L
    oversaturated: bool  # Y at or above the limit: no cycle is computed
    cycle_s: float | None
    phases: list[PhaseGreen]
    missing: list[str] = field(default_factory=list)  # approaches that had not reported: taken as 0


@dataclass(frozen=True, slots=True)
class GaugeRain:
    """A rain gauge's rolling totals as of its newest reading, re-keyed by zone."""

    gauge_id: str
    zone_id: str
    as_of: EventTime
    totals_mm: list[float]  # over the configured horizons (1 h, 3 h, 6 h, 12 h by default)


@dataclass(frozen=True, slots=True)
class RoadClosure:
    """A waterlogging point closing (or reopening) the road segment it lies on, keyed by segment
    so that it joins the segment's traffic partition."""

    segment_id: str
    point_id: str
    closed: bool
    at: EventTime
    depth_cm: float


@dataclass(frozen=True, slots=True)
class PointReport:
    """A resident's flood report near a monitored point, keyed by the point to join its state."""

    point_id: str
    report_id: str
    at: EventTime
    distance_m: float


@dataclass(frozen=True, slots=True)
class CellReport:
    """A resident's flood report where no point is monitored, keyed by its grid cell."""

    cell_id: str
    report_id: str
    at: EventTime
    lat: float
    lon: float
