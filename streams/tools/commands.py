"""The project's own subcommands of `citybrain`: topics, city, simulate, replay, watch, bench."""

from __future__ import annotations

import time

import click
from faust.cli import argument, option

from streams.app import app
from streams.settings import settings


@app.command()
async def topics(self) -> None:
    """Create the system's topics (idempotent)."""
    from streams.admin import ensure_topics

    created = ensure_topics(settings())
    self.say(f"created {len(created)} topics: {', '.join(created)}" if created else "all topics exist")


@app.command(
    argument("action", type=click.Choice(["load"])),
    argument("path"),
    option("--dry-run", is_flag=True, default=False, help="Say what would change; publish nothing."),
)
async def city(self, action: str, path: str, dry_run: bool) -> None:
    """Load a city's map from GeoJSON onto the reference topics: `city load FILE [--dry-run]`."""
    from streams.admin import ensure_topics
    from streams.tools.city_load import load_city

    if not dry_run:  # a dry run changes nothing on the broker, not even its topics
        ensure_topics(settings())
    if not await load_city(settings(), path, dry_run, self.say):
        raise SystemExit(1)


@app.command(
    option("--scenario", default="rush-hour", type=str, help="Scenario to run: rush-hour or rainstorm."),
    option("--minutes", default=90.0, type=float, help="Length of the scenario in event time."),
    option("--accel", default=60.0, type=float, help="Event-time seconds per wall second; 0 = as fast as possible."),
    option("--seed", default=7, type=int, help="Same seed, same city and same events."),
    option("--dirty/--clean", default=True, help="Mix in a malformed and a late reading, as real feeds do."),
)
async def simulate(self, scenario: str, minutes: float, accel: float, seed: int, dirty: bool) -> None:
    """Publish the synthetic city's reference data, then a scenario's events."""
    from streams.admin import ensure_topics
    from streams.tools.simulate import run_scenario

    ensure_topics(settings())
    sent = await run_scenario(settings(), scenario, minutes * 60, accel, seed, dirty, self.say)
    self.say(f"simulate: {sent} events published")


@app.command(
    argument("path"),
    option("--topic", "role", required=True, type=str, help="Topic role, e.g. traffic_readings."),
    option("--speed", default=1.0, type=float, help="Replay at recorded pace times this factor."),
    option("--fast", is_flag=True, default=False, help="As fast as possible."),
    option("--map", "mapping", multiple=True,
           help="CSV column mapping, COLUMN=field or COLUMN=field*factor to convert units (repeatable)."),
    option("--time-field", default="event_time", type=str, help="Field holding the event time."),
    option("--timezone", default=None, type=str, help="Time zone of times recorded without an offset, e.g. Asia/Shanghai."),
)
async def replay(self, path: str, role: str, speed: float, fast: bool, mapping: tuple[str, ...], time_field: str,
                 timezone: str | None) -> None:
    """Publish recorded events (JSON Lines or CSV) onto a topic."""
    from streams.tools.replay import column_mapping, replay_file

    sent = await replay_file(settings(), path, role, None if fast else speed, column_mapping(mapping), time_field, timezone)
    self.say(f"replay: {sent} events published")


@app.command(
    option("--seconds", default=0.0, type=float, help="Stop after this long (0: until interrupted)."),
    option("--quiet-after", default=0.0, type=float, help="Stop once nothing new has happened for this long."),
)
async def watch(self, seconds: float, quiet_after: float) -> None:
    """Print alerts and signal plans as they happen and the city's state, then a summary."""
    from streams.tools.watch import watch_city

    await watch_city(settings(), seconds, quiet_after, self.say)


@app.command(
    argument("pipeline", type=str),
    option("--events", default=500_000, type=int, help="Readings to preload."),
    option("--segments", default=2_000, type=int, help="Road segments the readings spread over."),
    option("--background-rate", default=10_000.0, type=float, help="flood-latency: traffic readings per second."),
    option("--probes", default=200, type=int, help="flood-latency, webhooks: messages timed."),
    option("--endpoints", default=4, type=int, help="webhooks: endpoints each message goes to."),
    option("--rate", default=20.0, type=float, help="webhooks: alerts per second while timing latency."),
)
async def bench(self, pipeline: str, events: int, segments: int, background_rate: float, probes: int,
                endpoints: int, rate: float) -> None:
    """traffic: pipeline throughput against a bare consumer; flood-latency: closure to CAP alert;
    people: health scans and car-park events (tokenised, re-keyed, billed) against a bare consumer;
    webhooks: dispatcher deliveries per second against a bare client, and the latency it adds."""
    from streams.tools.bench import bench_flood_latency, bench_people, bench_traffic, bench_webhooks

    started = time.time()
    if pipeline == "traffic":
        await bench_traffic(settings(), events, segments, self.say)
    elif pipeline == "flood-latency":
        await bench_flood_latency(settings(), background_rate, probes, self.say)
    elif pipeline == "people":
        await bench_people(settings(), events, self.say)
    elif pipeline == "webhooks":
        await bench_webhooks(settings(), min(events, 20_000), endpoints, rate, probes, self.say)
    else:
        raise SystemExit(f"no benchmark named {pipeline!r}; try: traffic, flood-latency, people, webhooks")
    self.say(f"bench took {time.time() - started:.0f} s")


