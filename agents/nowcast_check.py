"""The flood nowcast measured, and asked: how long before the closure line each forecast warned,
how many forecasts did not come true, and what a given rain would do.

  citybrain nowcast-check --scenario truth      points with known responses to a generated storm
  citybrain nowcast-check --scenario rainstorm  the rainstorm scenario, through the rain stages
  citybrain what-if --zones Z11,Z12 --rain-mm-h 40 --hours 2   from what a running city has learned

The check runs the stages in process (streams/tools/harness.py): the same code as a worker, with
the scenario's truth generated, never typed in.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from faust.cli import option

from agents.flood import LEVELS
from agents.nowcast import Outlook, Response
from agents.rain import RainStage, ZoneRainStage
from agents.waterlogging import WaterloggingStage
from schemas.contract import parse_time
from schemas.events import WaterDepthReading
from schemas.records import PointRain
from schemas.reference import CityMap, WaterloggingPoint
from streams.app import app
from streams.settings import Settings, settings
from streams.tools.harness import Event, run_stage

START = 1_784_534_400.0  # 2026-07-20 08:00 UTC


@dataclass(frozen=True)
class TruePoint:
    """A point whose water follows the model exactly, with a response of its own."""

    point: WaterloggingPoint
    cm_per_mm: float
    drain_cm_h: float


def storm(rng: random.Random, minutes: int) -> list[float]:
    """A zone's rain, mm/h, minute by minute: one burst, its peak, time and width drawn."""
    peak, at, width = rng.uniform(30, 90), rng.uniform(40, 100), rng.uniform(15, 30)
    return [round(peak * math.exp(-(((m - at) / width) ** 2)), 2) for m in range(minutes)]


def true_depths(p: TruePoint, rain: list[float]) -> list[float]:
    """The point's depth minute by minute under the rain (cm, never below zero)."""
    depth, out = 0.0, []
    for mm_h in rain:
        depth = max(0.0, depth + (p.cm_per_mm * mm_h - p.drain_cm_h) / 60)
        out.append(depth)
    return out


def truth_scenario(seed: int, points: int, minutes: int) -> tuple[CityMap, list[Event], dict[str, list[float]]]:
    """Points of four zones with drawn responses, a storm per zone, readings every 5 minutes
    with 0.3 cm of noise; and each point's true depth minute by minute."""
    rng = random.Random(seed)
    rain = {f"Z{z}": storm(rng, minutes) for z in range(4)}
    truth = [TruePoint(WaterloggingPoint(f"P{i:02d}", f"Low point {i}", f"Z{i % 4}", None, 30.2 + i * 1e-3, 120.1),
                       round(rng.uniform(0.4, 1.6), 2), round(rng.uniform(5, 20), 1)) for i in range(points)]
    depths = {p.point.point_id: true_depths(p, rain[p.point.zone_id]) for p in truth}
    events: list[tuple[float, Event]] = []
    for m in range(0, minutes, 5):  # the zone's rain, then a reading a second later
        t = START + 60 * m
        for p in truth:
            pid, zone = p.point.point_id, p.point.zone_id
            events.append((t, ("point_rain", pid, PointRain(pid, zone, t, rain[zone][m]))))
            noisy = max(0.0, round(depths[pid][m] + rng.gauss(0, 0.3), 1))
            events.append((t + 1, ("water_depths", pid, WaterDepthReading(f"W-{pid}", pid, t + 1, noisy))))
    city = CityMap(points={p.point.point_id: p.point for p in truth})
    return city, [e for _, e in sorted(events, key=lambda e: e[0])], depths


def rainstorm_scenario(seed: int, minutes: int, s: Settings) -> tuple[CityMap, list[Event], dict[str, list[float]]]:
    """The rainstorm scenario's rain through the rain stages (gauge -> zone -> point), merged in
    event time with its depth readings; each point's depth minute by minute from its generator."""
    from streams.tools.simulate import Rainstorm, build_city

    city = build_city(seed)
    scenario = Rainstorm(city, START, minutes * 60.0, seed=seed)
    weather = [(t, role, key, value) for t, role, key, value in scenario.weather_and_roads()
               if role in ("rain_readings", "water_depths")]
    gauges = run_stage(RainStage, [(role, key, value) for _, role, key, value in weather if role == "rain_readings"],
                       city=city, settings=s)
    gauge_rain: list[Event] = [("gauge_rain", k, orjson.dumps(v)) for k, v in gauges.sent("gauge_rain")]
    zones = run_stage(ZoneRainStage, gauge_rain, city=city, settings=s)
    timed: list[tuple[float, Event]] = [(t, (role, key, value)) for t, role, key, value in weather if role == "water_depths"]
    timed += [(parse_time(v["as_of"]) - 0.5, ("point_rain", k, orjson.dumps(v))) for k, v in zones.sent("point_rain")]
    depths = {p: [scenario.depth_cm(point, START + 60 * m) for m in range(minutes)] for p, point in city.points.items()}
    return city, [e for _, e in sorted(timed, key=lambda e: e[0])], depths


@dataclass
class Lead:
    point_id: str
    crossed: float | None  # when the true depth first reached the closure line
    warned: float | None  # when a forecast first warned of it, before the closure alert
    alerted: float | None  # when the closure alert went out


def measure(city: CityMap, events: list[Event], depths: dict[str, list[float]], s: Settings) -> tuple[list[Lead], int, int]:
    """Per point, the lead a forecast gained over the closure alert; the forecasts that did not
    come true; and all forecasts."""
    out = run_stage(WaterloggingStage, events, city=city, settings=s, broker_time=START + 86_400)
    alerts = [a for _, a in out.sent("alerts")]
    closure = s.waterlogging.levels_cm[LEVELS.index("closure")]
    leads, false, issued = [], 0, 0
    for point_id in sorted(city.points):
        mine = [a for a in alerts if dict(a["info"][0]["parameters"]).get("point_id") == point_id]
        alerted = next((parse_time(a["sent"]) for a in mine if a["info"][0]["event"] == "Road waterlogging"
                        and dict(a["info"][0]["parameters"])["level"] in ("closure", "severe")), None)
        warned = next((parse_time(a["sent"]) for a in mine if a["info"][0]["event"] == "Road waterlogging forecast"
                       and a["msg_type"] == "Alert" and (alerted is None or parse_time(a["sent"]) <= alerted)), None)
        # A forecast came true when the water reached the closure line while it stood.
        opened = None
        for a in mine:
            if a["info"][0]["event"] == "Road waterlogging forecast" and a["msg_type"] == "Alert":
                opened, issued = parse_time(a["sent"]), issued + 1
            elif a["info"][0]["event"] == "Road waterlogging forecast" and a["msg_type"] == "Cancel" and opened is not None:
                false += not (alerted is not None and opened <= alerted <= parse_time(a["sent"]))
                opened = None
        crossed = next((START + 60 * m for m, d in enumerate(depths[point_id]) if d >= closure), None)
        leads.append(Lead(point_id, crossed, warned, alerted))
    return leads, false, issued


def report(leads: list[Lead], false: int, issued: int, say) -> dict:
    def minute(t: float | None) -> str:
        return f"{(t - START) / 60:6.0f}" if t is not None else "     -"

    say("point    crossed  warned  alerted  lead (min)   (minutes from the start)")
    for lead in leads:
        if lead.crossed is None and lead.warned is None and lead.alerted is None:
            continue
        gained = f"{(lead.alerted - lead.warned) / 60:6.0f}" if lead.warned is not None and lead.alerted is not None else "     -"
        say(f"{lead.point_id:<8} {minute(lead.crossed)}  {minute(lead.warned)}  {minute(lead.alerted)}   {gained}")
    gains = [(lead.alerted - lead.warned) / 60 for lead in leads if lead.alerted is not None and lead.warned is not None]
    crossing = sum(1 for lead in leads if lead.alerted is not None)
    figures = {"points_crossing": crossing, "warned_ahead": len(gains), "median_lead_min": statistics.median(gains or [0.0]),
               "min_lead_min": min(gains, default=0.0), "forecasts": issued, "not_come_true": false}
    say(f"closure crossings: {crossing}, warned ahead: {len(gains)}; lead over the closure alert: median "
        f"{figures['median_lead_min']:.0f} min, least {figures['min_lead_min']:.0f} min; forecasts: {issued}, "
        f"not come true: {false}")
    return figures


def check(scenario: str, seed: int, points: int, minutes: int, s: Settings, say) -> dict:
    if scenario == "truth":
        city, events, depths = truth_scenario(seed, points, minutes)
    elif scenario == "rainstorm":
        city, events, depths = rainstorm_scenario(seed, minutes, s)
    else:
        raise SystemExit(f"no scenario {scenario!r}; one of: truth, rainstorm")
    return report(*measure(city, events, depths, s), say)


@app.command(
    option("--scenario", default="truth", type=str, help="truth (generated responses) or rainstorm."),
    option("--seed", default=7, type=int, help="Same seed, same points and storm."),
    option("--points", default=24, type=int, help="truth: monitored points."),
    option("--minutes", default=240, type=int, help="Length of the storm in event time."),
)
async def nowcast_check(self, scenario: str, seed: int, points: int, minutes: int) -> None:
    """The flood nowcast's lead over the closure alert, per point, and its forecasts that did not come true."""
    import asyncio

    # The stages run in process on a loop of their own (streams/tools/harness.py), not this command's.
    await asyncio.to_thread(check, scenario, seed, points, minutes, settings(), self.say)


def what_if_points(outlooks: dict[str, Outlook], watches: dict[str, tuple[float, float]], points: dict[str, WaterloggingPoint],
            zones: set[str], rain_mm_h: float, hours: float, at: float, s: Settings) -> Iterator[tuple[str, str, float]]:
    """If `rain_mm_h` falls on `zones` for `hours` from `at`: which points reach which line, and
    when (point, level, time), from each point's learned response and its last depth."""
    for point_id, point in sorted(points.items()):
        if point.zone_id not in zones:
            continue
        outlook = outlooks.get(point_id) or Outlook(Response.initial(s))
        t, depth = watches.get(point_id, (at, 0.0))
        r = outlook.response
        rate = r.cm_per_mm * rain_mm_h - r.drain_cm_h
        if rate <= 0:
            continue
        for level, line in zip(LEVELS, s.waterlogging.levels_cm):
            if line > depth and (line - depth) / rate <= hours:
                yield point_id, level, at + (line - depth) / rate * 3600


async def learned(s: Settings) -> tuple[dict[str, Outlook], dict[str, tuple[float, float]], dict[str, WaterloggingPoint]]:
    """What the waterlogging stage has learned, read from Redis as a worker would load it: each
    point's outlook, its last accepted reading, and the points of the reference data."""
    from streams.clients import async_redis
    from streams.reference import Reference
    from streams.state import StateStore, partition_key
    from streams.topics import partitions_of

    reference = Reference(s)
    await reference.start()
    client = async_redis(s)
    outlooks: dict[str, Outlook] = {}
    last: dict[str, tuple[float, float]] = {}
    try:
        store = StateStore(client)
        for p in range(partitions_of(WaterloggingStage.source, s)):
            base = partition_key(s.key_prefix, WaterloggingStage.name, p)
            snapshot = await store.load(base, (), WaterloggingStage.restored_hashes())
            stage = WaterloggingStage(p, s, reference)
            stage.load(snapshot.hashes)
            outlooks.update(stage.outlook.items())
            last.update({point_id: w.history[-1] for point_id, w in stage.watch.items() if w.history})
    finally:
        await client.aclose()
        await reference.stop()
    return outlooks, last, dict(reference.city.points)


@app.command(
    option("--zones", default="", type=str, help="Zone ids, comma-separated (none: every zone)."),
    option("--rain-mm-h", default=40.0, type=float, help="Rain falling on those zones, mm an hour."),
    option("--hours", default=2.0, type=float, help="For how long."),
)
async def what_if(self, zones: str, rain_mm_h: float, hours: float) -> None:
    """Which monitored points would reach which line, and when, if this rain fell from now."""
    import time

    s = settings()
    outlooks, last, points = await learned(s)
    asked = {z.strip() for z in zones.split(",") if z.strip()} or {p.zone_id for p in points.values()}
    now = time.time()
    reached = list(what_if_points(outlooks, {p: (now, depth) for p, (_, depth) in last.items()}, points, asked,
                                  rain_mm_h, hours, now, s))
    self.say(f"if {rain_mm_h:g} mm/h fell on {', '.join(sorted(asked))} for {hours:g} h "
             f"(responses learned at {sum(1 for o in outlooks.values() if o.response.readings)} of {len(points)} points):")
    for point_id, level, t in reached:
        self.say(f"  {point_id:<12} {level:<8} in {(t - now) / 60:5.0f} min")
    if not reached:
        self.say("  no point reaches its watch line")
