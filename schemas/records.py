"""Records the city brain produces: live state, alerts, signal plans, dead letters."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from schemas.cap import Alert
from schemas.contract import EventTime, contract

CongestionLevel = Literal["free", "basically_free", "light", "moderate", "severe"]


@contract
class DeadLetter:
    """An input that could not be used, with where it came from and why.

    Also the shape of late events, which go to a topic of their own to be reprocessed or audited.
    """

    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: str  # the start of the original bytes (as UTF-8, or base64 when they are not text)
    raw_encoding: Literal["utf-8", "base64"]
    received_at: EventTime
    key: str | None = None
    # The length and digest of the original (personal identifiers withheld), of which `raw` may
    # be only the start; the topic, partition and offset find the original itself.
    raw_bytes: int = 0
    raw_sha256: str | None = None


@contract
class SegmentWindow:
    """A road segment's traffic over one event-time window (GB/T 33171 indicators)."""

    segment_id: str
    zone_id: str
    window_start: EventTime
    window_end: EventTime
    vehicles: int  # whose speeds the mean weighs, a probe feed's sample among them
    flow_vph: float | None  # None: only sampled counts, the flow is not known
    speed_kmh: float  # volume-weighted mean speed
    occupancy: float | None  # None: no reading measured it
    dtp: float  # delay time proportion, 1 - v / v_free
    tpi: float  # 0-10
    level: CongestionLevel
    vehicle_km: float | None  # None with the flow: the window is left out of the city's weighting
    closed: bool = False  # closed by waterlogging: out of the congestion ranking


@contract
class CityIndexPart:
    """One partition's share of the city-wide TPI for a window, and its most congested segments."""

    partition: int
    window_start: EventTime
    vehicle_km: float
    tpi_vehicle_km: float
    segments: int
    top: list[tuple[str, float]]  # (segment_id, tpi), worst first


@contract
class CityIndex:
    """The city-wide TPI for a window, weighted by vehicle-km."""

    window_start: EventTime
    tpi: float
    level: CongestionLevel
    vehicle_km: float
    segments: int


@contract
class ApproachFlow:
    """Flow on one intersection approach over a window."""

    intersection_id: str
    approach_id: str
    window_start: EventTime
    flow_vph: float


@contract
class FlowReport:
    """What one traffic partition tells one signal partition after a batch.

    `final_through` carries the traffic partition's progress: no flow for a window starting at
    or before it will ever follow. A signal plan goes out once every reporting traffic partition
    has passed its window, so plans never depend on how fast partitions ran.
    """

    upstream_partition: int
    final_through: EventTime
    flows: list[ApproachFlow]


@contract
class PhaseGreen:
    phase: str
    flow_ratio: float  # critical q/s of the phase
    green_s: float


@contract
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


@contract
class GaugeRain:
    """A rain gauge's rolling totals as of its newest reading, re-keyed by zone."""

    gauge_id: str
    zone_id: str
    as_of: EventTime
    totals_mm: list[float]  # over the configured horizons (1 h, 3 h, 6 h, 12 h by default)
    reporting: bool = True  # False: the gauge has gone silent and its zone stops counting it


@contract
class RoadClosure:
    """A waterlogging point closing (or reopening) the road segment it lies on, keyed by segment
    so that it joins the segment's traffic partition."""

    segment_id: str
    point_id: str
    closed: bool
    at: EventTime
    depth_cm: float


@contract
class PointRain:
    """The rain falling over a monitored point's zone (its gauges' worst hourly total, mm/h), keyed
    by the point so that it joins the point's partition for its nowcast."""

    point_id: str
    zone_id: str
    as_of: EventTime
    rain_mm_h: float
    known: bool = True  # False: every gauge of the zone has gone silent, the rain is not known


@contract
class PointNeighbour:
    """A monitored point's water as its neighbours weigh it, keyed by the neighbour told, so that
    a sensor that disagrees with every point around it is doubted (agents/waterlogging.py)."""

    point_id: str  # the point told
    neighbour_id: str  # the point whose water it is
    water: Literal["dry", "wet", "unknown"]  # unknown: no accepted reading, or its sensor is at fault or silent
    at: EventTime


@contract
class PointReport:
    """A resident's flood report near a monitored point, keyed by the point to join its state."""

    point_id: str
    report_id: str
    at: EventTime
    distance_m: float
    water: bool = True  # False: a camera sees the road clear, evidence against a lone doubtful reading


@contract
class CellReport:
    """A resident's flood report where no point is monitored, keyed by its grid cell."""

    cell_id: str
    report_id: str
    at: EventTime
    lat: float
    lon: float


# ---------------------------------------------------------------------------------------------
# People, parking and evacuation. Persons and vehicles appear only as tokens (streams/privacy.py).

Colour = Literal["green", "yellow", "red"]


@contract
class PersonScan:
    """A health-code scan, tokenised and re-keyed by the person, with where it happened."""

    scan_id: str
    person_token: str
    venue_id: str
    zone_id: str
    shelter: bool  # the venue is a shelter: a scan there is a check-in
    at: EventTime


@contract
class PersonStatus:
    """A person's health-code colour changing, tokenised and re-keyed by the person."""

    person_token: str
    colour: Colour
    at: EventTime
    zone_id: str | None = None  # registered home zone, when known


@contract
class ZoneScan:
    """A scan counted in its venue's zone with the colour it showed."""

    zone_id: str
    scan_id: str
    colour: Colour
    at: EventTime


@contract
class Whereabouts:
    """A person arriving in or leaving a zone, keyed by that zone, so each zone knows who is in it."""

    zone_id: str
    person_token: str
    arrived: bool
    at: EventTime
    shelter_id: str | None = None  # arrived at (or left for) this shelter: a check-in


@contract
class ZoneFlood:
    """A gauge's rainstorm signal or a point's waterlogging level changing, keyed by its zone."""

    zone_id: str
    source_id: str  # zone (for its rain signal) or point
    kind: Literal["rain", "waterlogging"]
    level: str | None  # signal colour or waterlogging level; None when it has cleared
    at: EventTime


@contract
class LotOrder:
    """A car park closed to entry by a flood in its zone (or reopened), keyed by lot to join it."""

    order_id: str
    lot_id: str
    zone_id: str
    closed: bool
    at: EventTime
    reason: str


@contract
class EvacuationOrder:
    """A zone ordered to evacuate (or the order lifted); operators may publish these too."""

    order_id: str
    zone_id: str
    action: Literal["evacuate", "lift", "redirect"]  # redirect: the same order, to another shelter
    at: EventTime
    reason: str
    shelter_id: str | None = None  # where evacuees go; the nearest open shelter when not given
    issued_by: str = "citybrain"


NoticeKind = Literal["move_vehicle", "evacuate", "shelter_changed", "checked_in", "order_lifted", "deny_entry", "check_entry"]


@contract
class ShelterOccupancy:
    """How many people have checked in at a shelter, from the partition of the shelter's zone, to
    the one partition that chooses shelters."""

    shelter_id: str
    zone_id: str
    occupancy: int
    at: EventTime


@contract
class Notice:
    """A message to one addressee: a person or plate token, or a venue. Its id is deterministic,
    so a replay sends the same notice again rather than a second one."""

    notice_id: str
    to: str
    to_kind: Literal["person", "plate", "venue"]
    kind: NoticeKind
    at: EventTime
    zone_id: str
    text: list[tuple[str, str]]  # (language, text)
    safety_code: Colour | None = None  # the safety code the notice sets, for evacuation notices
    lot_id: str | None = None
    shelter_id: str | None = None
    scan_id: str | None = None
    order_id: str | None = None  # the evacuation or closure order the notice carries out


@contract
class Decision:
    """An operator's word on a public alert waiting as a draft (agents/approval.py)."""

    incident: str
    identifier: str  # of the draft decided on: a newer message of the incident needs a word of its own
    verdict: Literal["approved", "rejected"]
    at: EventTime
    note: str | None = None  # why, for the record


@contract
class ReviewEntry:
    """One entry of an incident's way out when operators approve public alerts first: a step of
    the incident, or an operator's word on its draft. Both go on one topic, keyed by incident,
    so that a replay meets them in the order they happened."""

    alert: Alert | None = None
    decision: Decision | None = None


@contract
class Bill:
    """One stay in a car park, billed after the car has left (leave first, pay later)."""

    bill_id: str
    lot_id: str
    plate_token: str
    entry_at: EventTime
    exit_at: EventTime
    duration_s: float
    billed_units: int
    tariff_per_hour_cny: float
    amount_cny: float


ParkingAnomalyKind = Literal["duplicate", "exit_without_entry", "entry_while_parked", "over_capacity",
                             "missed_exit", "entry_while_closed", "exit_before_entry"]


@contract
class ParkingAnomaly:
    """What a dirty feed did at a car park: counted, reported, never applied blindly."""

    lot_id: str
    kind: ParkingAnomalyKind
    event_id: str
    at: EventTime
