"""Prometheus metrics of the stream stages, in base units, without per-entity labels."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_PROCESSED = Counter("citybrain_events_processed_total", "Events applied to the city state", ["stage"])
EVENTS_REJECTED = Counter(
    "citybrain_events_rejected_total", "Events that broke their contract, by reason", ["stage", "reason"]
)
EVENTS_LATE = Counter("citybrain_late_events_total", "Events later than their window's grace period", ["stage"])
EVENTS_REDELIVERED = Counter(
    "citybrain_events_redelivered_total", "Events skipped because their offset was already applied", ["stage"]
)
DEAD_LETTERS = Counter("citybrain_dead_letters_total", "Records sent to the dead-letter topic", ["stage"])
STATE_CONFLICTS = Counter(
    "citybrain_state_conflicts_total", "Batches refused because another worker had moved the partition on", ["stage"]
)
BATCH_SIZE = Histogram(
    "citybrain_batch_events", "Events per processed batch", ["stage"], buckets=(1, 10, 100, 1000, 5000, 10000, 50000)
)
REDIS_COMMIT_SECONDS = Histogram(
    "citybrain_redis_commit_seconds", "Time to commit a batch's state to Redis", ["stage"]
)
ALERTS = Counter("citybrain_alert_messages_total", "Alert messages emitted", ["category", "severity", "msg_type"])
NOTICES = Counter("citybrain_notices_total", "Notices sent to people, plates and venues", ["kind"])
PARKING_ANOMALIES = Counter("citybrain_parking_anomalies_total", "Dirty parking events, by what was wrong", ["kind"])
BILLS = Counter("citybrain_parking_bills_total", "Stays billed after the vehicle left")
