"""Events near a megabyte on the real broker: dead-lettered in a few kilobytes, never retried, and
the storm around them gives the alerts it gives without them."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from schemas.contract import to_dict
from schemas.events import CitizenFloodReport
from streams.privacy import without_identifiers
from streams.topics import personal_fields, topic_name
from tests.integration.test_flood_pipeline import P1, P2, T0, ZONE, storm

pytestmark = pytest.mark.integration

MB = 900_000  # under what one record may be on this broker, so that Kafka takes each case


def oversized() -> list[tuple[str, str, bytes]]:
    """Each kind of oversized input, on the flood topics."""
    depth = to_dict(storm()[0][2])
    report = to_dict(CitizenFloodReport("R1", T0 + 600, 34.75, 113.65, 20.0))
    return [
        ("water_depths", "P1", orjson.dumps({**depth, "sensor_id": "x" * MB})),  # a huge identifier
        ("water_depths", "P1", orjson.dumps({**depth, "point_id": "P" * MB})),  # a huge reference
        ("water_depths", "P1", b"\xfe" * MB),  # a megabyte that is not text
        ("water_depths", "P1", b"{" * MB),  # a megabyte that is not JSON
        ("flood_reports", "R1", orjson.dumps({**report, "report_id": "R" * MB})),  # valid but for its id
        ("flood_reports", "R2", orjson.dumps({**report, "report_id": "R2", "text": "w" * MB})),  # a huge text
    ]


def test_oversized_events_are_dead_lettered_in_brief_and_the_storm_goes_on(city_run):
    clean = city_run(partitions=1)
    clean.publish([("zones", "Z1", ZONE), ("points", "P1", P1), ("points", "P2", P2)])
    clean.start_worker()
    clean.publish(storm())
    clean.wait_quiet(stages=(("waterlogging", "water_depths"),))

    run = city_run(partitions=1)
    run.publish([("zones", "Z1", ZONE), ("points", "P1", P1), ("points", "P2", P2)])
    run.start_worker()
    events = storm()
    cases = oversized()
    run.publish([*events[:5], *cases, *events[5:]])
    run.wait_quiet(stages=(("waterlogging", "water_depths"), ("reports", "flood_reports")))

    letters = run.records("dead_letters")
    # What a dead letter measures is the event with its personal identifiers withheld.
    kept = [without_identifiers(raw, personal_fields(topic_name(role, run.settings), run.settings))
            for role, _, raw in cases]
    assert sorted((d["raw_bytes"], d["raw_sha256"]) for d in letters) == sorted(
        (len(raw), hashlib.sha256(raw).hexdigest()) for raw in kept)
    assert max(len(orjson.dumps(d)) for d in letters) < 4_000
    assert {d["source_topic"] for d in letters} == {topic_name(r, run.settings) for r in ("water_depths", "flood_reports")}
    assert [a["identifier"] for a in run.records("alerts")] == [a["identifier"] for a in clean.records("alerts")]
    assert "retrying in" not in run.worker_log()
