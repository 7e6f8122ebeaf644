"""Event contracts: what each domain's sensors and systems put on Kafka.

Units are in the field names. Event times are UTC. Personal identifiers (`person_id`, `phone`,
`plate`) exist only on the ingestion topics; they are pseudonymised before anything downstream.
"""

from __future__ import annotations

from typing import Literal

from schemas.contract import EventTime, bounded, contract, text


@contract
class TrafficReading:
    """One detector's count and speeds on a road segment over `interval_s` seconds."""

    sensor_id: str
    segment_id: str
    event_time: EventTime
    vehicle_count: int = bounded(0, 10_000)
    interval_s: float = bounded(1, 3600)
    speed_kmh: float = bounded(0, 250)  # mean speed of the vehicles counted
    # Share of the interval the detector was occupied; None from a feed that has none (probe
    # vehicles): the window's occupancy is then left out, not taken as zero.
    occupancy: float | None = bounded(0, 1, default=None)
    approach_id: str | None = None  # set when the detector sits on an intersection approach
    # The count is a sample of the traffic (probe vehicles), not all of it: its speeds count,
    # the flow it would imply does not.
    sampled: bool = False


@contract
class WaterDepthReading:
    """Water depth above the lowest road point at a monitored waterlogging point."""

    sensor_id: str
    point_id: str
    event_time: EventTime
    # Any finite number passes the contract: an impossible depth (-999 is a common fault code) is
    # evidence about the sensor, judged by the flood brain, not a malformed event.
    depth_cm: float


@contract
class RainGaugeReading:
    """Rain fallen at a gauge over `interval_s` seconds ending at `event_time`."""

    gauge_id: str
    event_time: EventTime
    rain_mm: float = bounded(0, 500)
    interval_s: float = bounded(1, 86_400)


@contract
class CitizenFloodReport:
    """A resident's report of water on a road, with where it was seen."""

    report_id: str
    event_time: EventTime
    lat: float = bounded(-90, 90)
    lon: float = bounded(-180, 180)
    depth_cm: float | None = bounded(0, 1000, default=None)
    phone: str | None = None  # raw at ingestion only
    text: str | None = text(4_000, default=None)


@contract
class CameraDetection:
    """A road camera's reading of water on the road at the point or segment it looks at: water
    seen (with a depth class) or a clear road, and how sure the detection model is."""

    camera_id: str
    event_time: EventTime
    point_id: str | None = None
    segment_id: str | None = None
    water: bool = True
    depth_class: Literal["none", "shallow", "deep", "severe"] = "none"
    confidence: float = bounded(0, 1, default=1.0)


@contract
class HealthCodeScan:
    """A health code scanned at a venue's entrance."""

    scan_id: str
    person_id: str  # raw at ingestion only
    venue_id: str
    event_time: EventTime


@contract
class HealthCodeStatusChange:
    """A person's health-code colour changing."""

    person_id: str  # raw at ingestion only
    colour: Literal["green", "yellow", "red"]
    event_time: EventTime
    reason: str | None = None
    zone_id: str | None = None  # registered home zone, when known


@contract
class ParkingEvent:
    """A vehicle entering or leaving a car park, from the barrier's plate reader."""

    event_id: str
    lot_id: str
    plate: str  # raw at ingestion only
    direction: Literal["entry", "exit"]
    event_time: EventTime


@contract
class LotOccupancy:
    """A car park's count of spaces at one moment, as most open parking data publishes it (FIWARE
    OffStreetParking's availableSpotNumber or occupiedSpotNumber), where no plates are read."""

    lot_id: str
    event_time: EventTime
    available_spots: int | None = bounded(0, 100_000, default=None)
    occupied_spots: int | None = bounded(0, 100_000, default=None)  # the count, where the feed gives it
