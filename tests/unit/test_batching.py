"""The same input gives the same records and the same state, however it is batched.

A rainstorm and a rush hour over the synthetic city (traffic, rain, water, residents' reports,
health codes, car parks) run through every stage in process, each stage fed what the stages before it sent.
Each stage's input is then replayed in batches of 1, 7, 500 and 10,000 events per partition:
every record sent and every Redis value must be byte-identical (only the commit counters, one
per batch, differ). The partitions of a topic are then interleaved in other orders, as Kafka
may deliver them, keeping each partition's own order. Topics read alongside are delivered
before the stage's own topic, one fixed order of the many Kafka allows across topics.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from functools import cache

import pytest

from agents.cameras import CamerasStage
from agents.cap_feed import CapFeedStage
from agents.evacuation import EvacuationStage, FloodZonesStage
from agents.health import HealthIntakeStage, PeopleStage, ZoneHealthStage
from agents.parking import ParkingStage
from agents.rain import RainStage, ZoneRainStage
from agents.reports import ReportCellsStage, ReportsStage
from agents.traffic import CityStage, SignalsStage, TrafficStage
from agents.waterlogging import WaterloggingStage
from agents.webhooks import WebhooksStage
from schemas.contract import encode
from schemas.events import CameraDetection
from streams.settings import Settings
from streams.tools.harness import PlacedEvent, place, run_stage
from streams.tools.simulate import Rainstorm, RushHour, build_city
from streams.topics import SPECS

S = Settings(privacy_keys=("k1:batching-property-test-key",))
CITY = build_city(seed=7)
START = 1_780_000_000.0  # 2026-05-28: event times well before the broker's
BROKER_TIME = START + 86_400.0

# Upstream first, so that each stage's input is what the ones before it sent (flood_zones reads
# the shelters' check-ins that evacuation, after it, sends: the one loop in the city).
PIPELINE = (ReportsStage, CamerasStage, RainStage, ZoneRainStage, WaterloggingStage, TrafficStage, CityStage, SignalsStage,
            ReportCellsStage, HealthIntakeStage, PeopleStage, ZoneHealthStage, FloodZonesStage, ParkingStage,
            EvacuationStage, CapFeedStage, WebhooksStage)


def cameras() -> list[tuple[float, str, str, CameraDetection]]:
    """Road cameras through the storm: one at a monitored point, one at a road with no sensor,
    water seen (sure and unsure), then the road clear."""
    point = sorted(CITY.points)[0]
    road = next(s for s in sorted(CITY.segments) if s not in {p.segment_id for p in CITY.points.values()})
    out = []
    for m in range(10, 120, 5):
        t = START + 60 * m
        water = m < 80
        for camera, at in (("CAM-P", {"point_id": point}), ("CAM-R", {"segment_id": road})):
            out.append((t, "camera_detections", camera, CameraDetection(
                camera, t, water=water, depth_class="deep" if water else "none", confidence=0.9 if m % 15 else 0.4, **at)))
    return out


@cache
def recorded() -> dict[str, list[PlacedEvent]]:
    """Every topic's records (by role), from the scenario and from each stage in turn."""
    # The storm for everything but traffic, which comes from a rush hour: its detectors sit on
    # intersection approaches too, so signal plans are made.
    storm = [e for e in Rainstorm(CITY, START, 7200.0, seed=7).events() if e[1] != "traffic_readings"]
    events = sorted([*storm, *cameras(), *RushHour(CITY, START, duration_s=7200.0, seed=7).events()], key=lambda e: e[0])
    topics: dict[str, list[PlacedEvent]] = defaultdict(list)
    for role, *rest in place([(role, key, encode(record)) for _, role, key, record in events], S, BROKER_TIME):
        topics[role].append((role, *rest))
    for stage in PIPELINE:
        out = run_stage(stage, stage_input(stage, topics), city=CITY, settings=S, batch=10_000)
        for name, key, value, partition in (x for p in sorted(out.sends) for x in out.sends[p]):
            role = next(r for r, spec in SPECS.items() if spec.name == name)
            if partition is None:
                (_, partition, *_), = place([(role, key.decode() if key is not None else None, value)], S, BROKER_TIME)
            topics[role].append((role, partition, key.decode() if key is not None else None, value, BROKER_TIME))
    return topics


def stage_input(stage, topics: dict[str, list[PlacedEvent]]) -> list[PlacedEvent]:
    """The topics a stage reads alongside, then its own."""
    return [e for role in (*stage.alongside, stage.source) for e in topics.get(role, [])]


def without_commit_counters(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.endswith(":commits")}


@pytest.mark.parametrize("stage", PIPELINE, ids=lambda s: s.name)
def test_a_stage_sends_and_keeps_the_same_whatever_the_batch_size(stage):
    events = stage_input(stage, recorded())
    assert events, f"the scenario gives {stage.name} nothing to read"
    runs = {size: run_stage(stage, events, city=CITY, settings=S, batch=size) for size in (10_000, 500, 7, 1)}
    whole = runs[10_000]
    for size, out in runs.items():
        assert out.sends == whole.sends, f"{stage.name}: records sent in batches of {size} differ"
        assert without_commit_counters(out.state) == without_commit_counters(whole.state), (
            f"{stage.name}: state after batches of {size} differs")


def interleaved(events: list[PlacedEvent], seed: int) -> list[PlacedEvent]:
    """The same events with each topic's partitions merged in a random order, each partition's
    own order kept; topics stay in the order given."""
    rng = random.Random(seed)
    out: list[PlacedEvent] = []
    for role in dict.fromkeys(e[0] for e in events):
        queues: dict[int, deque[PlacedEvent]] = defaultdict(deque)
        for e in events:
            if e[0] == role:
                queues[e[1]].append(e)
        while queues:
            partition = rng.choice(sorted(queues))
            out.append(queues[partition].popleft())
            if not queues[partition]:
                del queues[partition]
    return out


@pytest.mark.parametrize("stage", PIPELINE, ids=lambda s: s.name)
def test_a_stage_sends_and_keeps_the_same_whatever_order_its_partitions_arrive_in(stage):
    events = stage_input(stage, recorded())
    if len({(role, partition) for role, partition, *_ in events}) == len({role for role, *_ in events}):
        assert interleaved(events, 1) == events  # one partition a topic: Kafka orders all of it
        return
    whole = run_stage(stage, events, city=CITY, settings=S, batch=10_000)
    for seed in (1, 2):
        shuffled = interleaved(events, seed)
        assert shuffled != events and sorted(map(repr, shuffled)) == sorted(map(repr, events))
        out = run_stage(stage, shuffled, city=CITY, settings=S, batch=7)
        assert out.sends == whole.sends, f"{stage.name}: records sent differ with partitions interleaved ({seed})"
        assert without_commit_counters(out.state) == without_commit_counters(whole.state), (
            f"{stage.name}: state differs with partitions interleaved ({seed})")


def test_the_scenario_reaches_every_kind_of_output():
    topics = recorded()
    for role in ("alerts", "notices", "bills", "signal_plans", "city_parts", "zone_scans", "whereabouts"):
        assert topics.get(role), f"nothing on {role}"
