"""Prometheus metrics of the stream stages, in base units, without per-person, per-plate or
per-sensor labels. Every worker serves them on `/metrics` of its web port (streams/app.py).

Counters and histograms are updated as things happen; the city's gauges (TPI, points at each
waterlogging level, zones under each signal, lots by status, people under evacuation orders,
open incidents, lags) are read at scrape time from the partitions this worker holds, so a
rebalance never leaves a stale value behind: the dashboards sum them over workers.
"""

from __future__ import annotations

import math
import operator
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

EVENTS_PROCESSED = Counter("citybrain_events_processed_total", "Events applied to the city state", ["stage"])
EVENTS_REJECTED = Counter(
    "citybrain_events_rejected_total", "Events that broke their contract, by reason", ["stage", "reason"]
)
EVENTS_LATE = Counter("citybrain_late_events_total", "Events the state had moved past: later than their window's grace "
                      "period, or older than their sensor's newest reading", ["stage"])
EVENTS_REPEATED = Counter(
    "citybrain_events_repeated_total", "Readings a sensor sent again (same sensor, time and value): counted once", ["stage"]
)
EVENTS_REKEYED = Counter(
    "citybrain_events_rekeyed_total", "Events read under a key other than their own id, sent again under it", ["stage"]
)
EVENTS_REDELIVERED = Counter(
    "citybrain_events_redelivered_total", "Events skipped because their offset was already applied", ["stage"]
)
DEAD_LETTERS = Counter("citybrain_dead_letters_total", "Records sent to the dead-letter topic", ["stage"])
STATE_CONFLICTS = Counter(
    "citybrain_state_conflicts_total", "Batches refused because another worker had moved the partition on", ["stage"]
)
STATE_REREADS = Counter(
    "citybrain_state_rereads_total",
    "Times a partition's Redis state was found behind what had been read (lost or restored writes) and its input re-read",
    ["stage"],
)
INPUT_GONE = Counter(
    "citybrain_input_gone_total",
    "Batches refused because the input a partition's state still needs is no longer retained by Kafka", ["stage"],
)
BATCH_SIZE = Histogram(
    "citybrain_batch_events", "Events per processed batch", ["stage"], buckets=(1, 10, 100, 1000, 5000, 10000, 50000)
)
REDIS_COMMIT_SECONDS = Histogram(
    "citybrain_redis_commit_seconds", "Time to commit a batch's state to Redis", ["stage"]
)
ALERTS = Counter("citybrain_alert_messages_total", "Alert messages emitted", ["category", "severity", "msg_type"])
ALERT_LATENCY = Histogram(
    "citybrain_alert_latency_seconds", "From the event that set an alert off reaching Kafka to the alert on Kafka "
    "(on alerts.reviews where operators approve public alerts first)",
    ["category"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ALERT_DRAFTS = Counter(
    "citybrain_alert_drafts_total", "Public alert messages held for an operator's word, by what became of them: "
    "drafted, then approved, rejected, replaced by a newer step or withdrawn when the incident ended", ["outcome"]
)
ALERTS_KEPT_BACK = Counter("citybrain_alerts_kept_back_total", "Alert messages of incidents an operator rejected, kept back")
NOTICES = Counter("citybrain_notices_total", "Notices sent to people, plates and venues", ["kind"])
READINGS_DOUBTFUL = Counter(
    "citybrain_readings_doubtful_total", "Sensor readings held as doubtful, by the quality check that flagged them", ["check"]
)
PARKING_ANOMALIES = Counter("citybrain_parking_anomalies_total", "Dirty parking events, by what was wrong", ["kind"])
BILLS = Counter("citybrain_parking_bills_total", "Stays billed after the vehicle left")
WEBHOOK_DELIVERIES = Counter(
    "citybrain_webhook_deliveries_total", "Webhook delivery attempts, by subscription and outcome", ["subscription", "outcome"]
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "citybrain_webhook_attempt_seconds", "Time an endpoint took to answer a delivery attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_DELAY = Histogram(
    "citybrain_webhook_delivery_delay_seconds", "From a message reaching Kafka to its successful delivery",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)

# The city's gauges: name -> (help, label names, how partitions combine).
GAUGES: dict[str, tuple[str, tuple[str, ...], Callable[[float, float], float]]] = {
    "citybrain_city_tpi": ("City traffic performance index (0-10) of the newest window", (), max),
    "citybrain_waterlogging_points": ("Monitored points under a waterlogging alert, by level", ("level",), operator.add),
    "citybrain_rainstorm_zones": ("Zones under a rainstorm signal, by colour", ("signal",), operator.add),
    "citybrain_rain_zones_unmonitored": ("Zones whose rain gauges have all gone silent", (), operator.add),
    "citybrain_lots": ("Car parks by FIWARE OffStreetParking status", ("status",), operator.add),
    "citybrain_people_under_evacuation_orders": ("People told to evacuate whose order stands", (), operator.add),
    "citybrain_active_incidents": ("Incidents with an alert out and no Cancel yet, by CAP category", ("category",),
                                   operator.add),
    "citybrain_window_lag_seconds": ("How far a stage's event-time watermark trails the wall clock, worst partition",
                                     ("stage",), max),
    "citybrain_consumer_lag_records": ("Records on a stage's source topics not yet applied", ("stage",), operator.add),
    "citybrain_webhook_pending_deliveries": ("Webhook deliveries waiting for their next attempt", (), operator.add),
    "citybrain_alert_drafts_waiting": ("Public alerts waiting for an operator's word", (), operator.add),
    "citybrain_alert_draft_wait_seconds": ("How long the oldest draft alert has waited for an operator", (), max),
}

# Label values every worker reports, at 0 when nothing is there: a board shows 0, not "no data".
KNOWN_LABELS: dict[str, list[tuple[str, ...]]] = {
    "citybrain_waterlogging_points": [("watch",), ("warning",), ("closure",), ("severe",)],
    "citybrain_rainstorm_zones": [("blue",), ("yellow",), ("orange",), ("red",)],
    "citybrain_lots": [("spacesAvailable",), ("almostFull",), ("full",), ("closed",)],
    "citybrain_active_incidents": [(c,) for c in ("Met", "Transport", "Safety", "Health", "Infra")],
}

Gauges = dict[str, Tally]  # gauge name -> {label values: value}


def gauge(name: str, value: float, *labels: str) -> Gauges:
    """One gauge value, as a stage reports it."""
    return {name: Tally({labels: float(value)})}


def merge(*parts: Gauges) -> Gauges:
    """Gauges of one stage from several sources, added together."""
    out: Gauges = {}
    for part in parts:
        for name, values in part.items():
            out.setdefault(name, Tally()).update(values)
    return out


def window_lag(stage: str, watermark: float) -> Gauges:
    return gauge("citybrain_window_lag_seconds", max(0.0, time.time() - watermark), stage) if math.isfinite(watermark) else {}


class CityCollector(Collector):
    """Collects the gauges the sources report (each an iterable of Gauges) at scrape time."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterator[Gauges]]] = []

    def collect(self) -> Iterator[Any]:
        combined: dict[str, dict[tuple[str, ...], float]] = {
            name: dict.fromkeys(KNOWN_LABELS.get(name, [()] if not labels else []), 0.0)
            for name, (_, labels, _) in GAUGES.items()
        }
        for source in self.sources:
            for gauges in source():
                for name, values in gauges.items():
                    how = GAUGES[name][2]
                    series = combined[name]
                    for labels, reading in values.items():
                        series[labels] = how(series[labels], reading) if series.get(labels) else reading
        for name, (doc, labels, _) in GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for label_values, value in sorted(combined[name].items()):
                family.add_metric(list(label_values), value)
            yield family


CITY = CityCollector()
REGISTRY.register(CITY)
