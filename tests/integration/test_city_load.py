"""A city's map loaded from GeoJSON onto the real broker: `citybrain city load` says what would
change, publishes only a file without errors, and a worker runs on the map it loaded."""

from __future__ import annotations

import json
import subprocess

import pytest

from schemas.contract import parse_time
from schemas.events import WaterDepthReading
from streams.admin import existing_topics
from tests.integration.conftest import CITYBRAIN
from tests.unit.test_city_load import CITY, feature

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T06:00:00Z")


def test_a_geojson_city_is_checked_loaded_and_used(city_run, tmp_path):
    run = city_run(partitions=1)
    city = tmp_path / "zhengzhou.geojson"
    city.write_text(json.dumps(CITY, ensure_ascii=False))

    def load(path, *flags):
        return subprocess.run([str(CITYBRAIN), "city", "load", str(path), *flags], env=run.env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    # On a broker that has no map yet, a dry run reads none and creates nothing.
    fresh = {**run.env, "CITYBRAIN_TOPIC_PREFIX": f"{run.settings.topic_prefix}fresh."}
    first = subprocess.run([str(CITYBRAIN), "city", "load", str(city), "--dry-run"], env=fresh, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "zones: 1 new, 0 changed, 0 unchanged" in first.stdout, first.stderr[-2000:]
    assert not [t for t in existing_topics(run.settings) if t.startswith(fresh["CITYBRAIN_TOPIC_PREFIX"])]

    dry = load(city, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "zones: 1 new, 0 changed, 0 unchanged" in dry.stdout and "dry run: nothing published" in dry.stdout
    assert run.records("zones") == []
    done = load(city)
    assert done.returncode == 0 and "published 7 records" in done.stdout, done.stdout + done.stderr
    (zone,) = run.records("zones")
    assert zone["zone_id"] == "Z1" and len(zone["other_parts"]) == 1
    again = load(city, "--dry-run")
    assert "segments: 0 new, 0 changed, 1 unchanged" in again.stdout

    broken = tmp_path / "broken.geojson"
    broken.write_text(json.dumps({"type": "FeatureCollection", "features": [
        feature("lots", "L9", None, name="No coordinates", zone_id="Z1", capacity=10),
        feature("gauges", "G9", {"type": "Point", "coordinates": [113.6, 34.7]}, zone_id="Z1")]}))
    refused = load(broken)
    assert refused.returncode == 1 and "1 errors: nothing published" in refused.stdout
    assert "feature 0 (lots L9): no geometry" in refused.stdout
    assert [g["gauge_id"] for g in run.records("gauges")] == ["G1"]  # the good gauge of a bad file is not sent

    # A worker on the loaded map: the underpass on the segment it names closes that segment.
    run.start_worker()
    run.publish([("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 120 * i, d)) for i, d in enumerate([0, 12, 20, 28])])
    run.wait_quiet(stages=(("waterlogging", "water_depths"),))
    assert [(c["segment_id"], c["closed"]) for c in run.records("closures")] == [("S1", True)]
