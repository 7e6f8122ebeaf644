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
    personal_key: bool = False  # the key itself is a raw personal identifier


SPECS = {
    # Ingestion: what sensors and city systems publish.
    "traffic_readings": TopicSpec("traffic.readings", "segment_id", "TrafficReading"),
    "water_depths": TopicSpec("flood.water_depths", "point_id", "WaterDepthReading"),
    "rain_readings": TopicSpec("flood.rain_readings", "gauge_id", "RainGaugeReading"),
    "flood_reports": TopicSpec("flood.citizen_reports", "report_id", "CitizenFloodReport", personal=("phone",)),
    "camera_detections": TopicSpec("flood.camera_detections", "camera_id", "CameraDetection"),
    "health_scans": TopicSpec("health.scans", "venue_id", "HealthCodeScan", personal=("person_id",)),
    "health_status": TopicSpec("health.status_changes", "person_id", "HealthCodeStatusChange", personal=("person_id",),
                               personal_key=True),
    "parking_events": TopicSpec("parking.events", "lot_id", "ParkingEvent", personal=("plate",)),
    "parking_occupancy": TopicSpec("parking.occupancy", "lot_id", "LotOccupancy"),
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
    "point_rain": TopicSpec("flood.point_rain", "point_id", "PointRain (joined as a table)"),
    "point_neighbours": TopicSpec("flood.point_neighbours", "point_id", "PointNeighbour (joined as a table)"),
    "report_cells": TopicSpec("flood.report_cells", "cell_id", "CellReport"),
    "person_scans": TopicSpec("people.scans", "person token", "PersonScan"),
    "person_status": TopicSpec("people.status", "person token", "PersonStatus (joined as a table)"),
    "zone_scans": TopicSpec("health.zone_scans", "zone_id", "ZoneScan"),
    "whereabouts": TopicSpec("people.whereabouts", "zone_id", "Whereabouts"),
    "zone_floods": TopicSpec("flood.zone_levels", "zone_id", "ZoneFlood", partitions=1),
    "lot_orders": TopicSpec("parking.lot_orders", "lot_id", "LotOrder (joined as a table)"),
    "evacuation_orders": TopicSpec("people.evacuation_orders", "zone_id", "EvacuationOrder (joined as a table)"),
    "shelter_occupancy": TopicSpec("people.shelter_occupancy", "shelter_id", "ShelterOccupancy (joined as a table)",
                                   partitions=1),
    # What the city brain says.
    "signal_plans": TopicSpec("signals.plans", "intersection_id", "SignalPlan"),
    "bills": TopicSpec("parking.bills", "lot_id", "Bill"),
    "parking_anomalies": TopicSpec("parking.anomalies", "lot_id", "ParkingAnomaly"),
    "notices": TopicSpec("notices", "addressee: a token or a venue_id", "Notice"),
    "webhook_outcomes": TopicSpec("webhooks.outcomes", "none: sent to the partition holding the delivery",
                                  "DeliveryOutcome (joined as a table)"),
    "webhook_dead_letters": TopicSpec("webhooks.dead_letters", "subscription_id", "DeadDelivery"),
    # Webhook subscriptions made through the API: the latest per id, a tombstone deletes one.
    "webhook_subscriptions": TopicSpec("webhooks.subscriptions", "subscription_id", "Subscription", compacted=True,
                                       partitions=1),
    "alerts": TopicSpec("alerts", "incident", "CAP 1.2 Alert as JSON (schemas/cap.py)"),
    # Where operators approve public alerts first (settings' approval): an incident's steps on
    # their way to `alerts`, and the operators' decisions on its drafts, in one order.
    "alert_reviews": TopicSpec("alerts.reviews", "incident", "ReviewEntry: a CAP 1.2 Alert not yet out, or a Decision"),
    "alerts_cap": TopicSpec("alerts.cap", "incident", "the same CAP 1.2 Alert as XML"),
    "dead_letters": TopicSpec("dead_letters", "source topic", "DeadLetter"),
    "late_events": TopicSpec("late_events", "source topic", "DeadLetter (reason: late)"),
}

REFERENCE = ("zones", "segments", "intersections", "points", "gauges", "lots", "venues")


def topic_name(role: str, s: Settings | None = None) -> str:
    """The broker-side name of a topic, with the configured prefix."""
    return (s or settings()).topic_prefix + SPECS[role].name


def spec_of(topic: str, s: Settings | None = None) -> TopicSpec | None:
    """The spec of the topic with this broker-side name."""
    return next((spec for role, spec in SPECS.items() if topic_name(role, s) == topic), None)


def personal_fields(topic: str, s: Settings | None = None) -> tuple[str, ...]:
    """The personal-identifier fields of the topic with this broker-side name."""
    spec = spec_of(topic, s)
    return spec.personal if spec else ()


def partitions_of(role: str, s: Settings | None = None) -> int:
    return SPECS[role].partitions or (s or settings()).partitions


# What the stages send to. What a stage reads is its own declaration (`Stage.source`, and
# `Stage.alongside` for the topics read alongside), subscribed by `runtime.stage`.
city_parts = app.topic(topic_name("city_parts"))
approach_flows = app.topic(topic_name("approach_flows"))
signal_plans = app.topic(topic_name("signal_plans"))
gauge_rain = app.topic(topic_name("gauge_rain"))
closures = app.topic(topic_name("closures"))
point_rain = app.topic(topic_name("point_rain"))
point_reports = app.topic(topic_name("point_reports"))
point_neighbours = app.topic(topic_name("point_neighbours"))
report_cells = app.topic(topic_name("report_cells"))
person_scans = app.topic(topic_name("person_scans"))
person_status = app.topic(topic_name("person_status"))
zone_scans = app.topic(topic_name("zone_scans"))
whereabouts = app.topic(topic_name("whereabouts"))
zone_floods = app.topic(topic_name("zone_floods"))
lot_orders = app.topic(topic_name("lot_orders"))
evacuation_orders = app.topic(topic_name("evacuation_orders"))
shelter_occupancy = app.topic(topic_name("shelter_occupancy"))
bills = app.topic(topic_name("bills"))
parking_anomalies = app.topic(topic_name("parking_anomalies"))
notices = app.topic(topic_name("notices"))
webhook_outcomes = app.topic(topic_name("webhook_outcomes"))
webhook_dead_letters = app.topic(topic_name("webhook_dead_letters"))
webhook_subscriptions = app.topic(topic_name("webhook_subscriptions"))
alerts = app.topic(topic_name("alerts"))
alert_reviews = app.topic(topic_name("alert_reviews"))
alerts_cap = app.topic(topic_name("alerts_cap"))
dead_letters = app.topic(topic_name("dead_letters"))
late_events = app.topic(topic_name("late_events"))
