"""Every topic in the system, with its key and what it carries.

Values are JSON (orjson) per the contracts in `schemas/`; keys are UTF-8 ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.app import app
from streams.settings import Settings, settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    carries: str
    compacted: bool = False
    partitions: int | None = None  # None: the configured default
    personal: tuple[str, ...] = ()  # fields holding raw personal identifiers (ingestion topics only)


SPECS = {
    # Ingestion: what sensors and city systems publish.
    "traffic_readings": TopicSpec("traffic.readings", "segment_id", "TrafficReading"),
    "water_depths": TopicSpec("flood.water_depths", "point_id", "WaterDepthReading"),
    "rain_readings": TopicSpec("flood.rain_readings", "gauge_id", "RainGaugeReading"),
    "flood_reports": TopicSpec("flood.citizen_reports", "report_id", "CitizenFloodReport", personal=("phone",)),
    "health_scans": TopicSpec("health.scans", "venue_id", "HealthCodeScan", personal=("person_id",)),
    "health_status": TopicSpec("health.status_changes", "person_id", "HealthCodeStatusChange", personal=("person_id",)),
    "parking_events": TopicSpec("parking.events", "lot_id", "ParkingEvent", personal=("plate",)),
    # Reference data: the latest record per id.
    "zones": TopicSpec("ref.zones", "zone_id", "Zone", compacted=True, partitions=1),
    "segments": TopicSpec("ref.segments", "segment_id", "Segment", compacted=True, partitions=1),
    "intersections": TopicSpec("ref.intersections", "intersection_id", "Intersection", compacted=True, partitions=1),
    "points": TopicSpec("ref.waterlogging_points", "point_id", "WaterloggingPoint", compacted=True, partitions=1),
    "gauges": TopicSpec("ref.rain_gauges", "gauge_id", "RainGauge", compacted=True, partitions=1),
    "lots": TopicSpec("ref.lots", "lot_id", "Lot", compacted=True, partitions=1),
    "venues": TopicSpec("ref.venues", "venue_id", "Venue", compacted=True, partitions=1),
    # Between stages: re-keyed so that what is combined lives on one partition.
    "approach_flows": TopicSpec("traffic.approach_flows", "none: partition chosen by intersection", "FlowReport"),
    "city_parts": TopicSpec("traffic.city_parts", "city", "CityIndexPart", partitions=1),
    "gauge_rain": TopicSpec("flood.gauge_rain", "zone_id", "GaugeRain"),
    "closures": TopicSpec("traffic.closures", "segment_id", "RoadClosure (joined as a table)"),
    "point_reports": TopicSpec("flood.point_reports", "point_id", "PointReport (joined as a table)"),
    "report_cells": TopicSpec("flood.report_cells", "cell_id", "CellReport"),
    # What the city brain says.
    "signal_plans": TopicSpec("signals.plans", "intersection_id", "SignalPlan"),
    "alerts": TopicSpec("alerts", "incident", "CAP 1.2 Alert as JSON (schemas/cap.py)"),
    "alerts_cap": TopicSpec("alerts.cap", "incident", "the same CAP 1.2 Alert as XML"),
    "dead_letters": TopicSpec("dead_letters", "source topic", "DeadLetter"),
    "late_events": TopicSpec("late_events", "source topic", "DeadLetter (reason: late)"),
}

REFERENCE = ("zones", "segments", "intersections", "points", "gauges", "lots", "venues")


def topic_name(role: str, s: Settings | None = None) -> str:
    """The broker-side name of a topic, with the configured prefix."""
    return (s or settings()).topic_prefix + SPECS[role].name


def personal_fields(topic: str, s: Settings | None = None) -> tuple[str, ...]:
    """The personal-identifier fields of the topic with this broker-side name."""
    return next((spec.personal for role, spec in SPECS.items() if topic_name(role, s) == topic), ())


def partitions_of(role: str, s: Settings | None = None) -> int:
    return SPECS[role].partitions or (s or settings()).partitions


traffic_readings = app.topic(topic_name("traffic_readings"))
water_depths = app.topic(topic_name("water_depths"))
rain_readings = app.topic(topic_name("rain_readings"))
gauge_rain = app.topic(topic_name("gauge_rain"))
closures = app.topic(topic_name("closures"))
flood_reports = app.topic(topic_name("flood_reports"))
report_cells = app.topic(topic_name("report_cells"))
point_reports = app.topic(topic_name("point_reports"))
# The waterlogging stage reads depths with residents' reports near its points joined in.
depths_with_reports = app.topic(topic_name("water_depths"), topic_name("point_reports"))
# The traffic stage reads its readings with the closures joined in (co-partitioned by segment).
traffic_with_closures = app.topic(topic_name("traffic_readings"), topic_name("closures"))
approach_flows = app.topic(topic_name("approach_flows"))
city_parts = app.topic(topic_name("city_parts"))
signal_plans = app.topic(topic_name("signal_plans"))
alerts = app.topic(topic_name("alerts"))
alerts_cap = app.topic(topic_name("alerts_cap"))
dead_letters = app.topic(topic_name("dead_letters"))
late_events = app.topic(topic_name("late_events"))
