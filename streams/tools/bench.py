"""Throughput of the traffic pipeline against a bare consumer, on one preloaded topic.

All read the same N readings in the same run on the same machine: a bare aiokafka consumer
that only drains the topic; a faust agent that only takes events on faust's stock stream path;
the same agent on the batch path the workers use; and a worker process running the whole
traffic pipeline (decode, validate, window, alert, commit state to Redis). The ratios say what
each path and the city brain's work cost on top of reading Kafka at all.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import os
import queue
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.cap import Alert, Area, Incident, bilingual
from schemas.contract import parse_time
from schemas.events import HealthCodeScan, HealthCodeStatusChange, ParkingEvent, TrafficReading, WaterDepthReading
from schemas.reference import CityMap, Lot, RoadClass, Segment, Venue, WaterloggingPoint, Zone
from streams.admin import ensure_topics
from streams.clients import async_redis, kafka_admin, kafka_auth
from streams.settings import Cap, Settings
from streams.state import partition_key
from streams.tools.feed import Publisher
from streams.tools.simulate import reference_records
from streams.topics import SPECS, partitions_of, topic_name

CLASSES: tuple[tuple[RoadClass, float], ...] = (("expressway", 80.0), ("arterial", 50.0), ("secondary", 40.0), ("local", 30.0))


def bench_segments(count: int) -> list[Segment]:
    return [
        Segment(f"B{i:05d}", f"Bench Rd {i}", f"Z{i % 16:02d}", CLASSES[i % 4][0], 1.0, CLASSES[i % 4][1], 2)
        for i in range(count)
    ]


def bench_readings(segments: list[Segment], events: int, start: float) -> list[TrafficReading]:
    """`events` readings, every segment reporting every 30 s of event time, speeds varied."""
    out: list[TrafficReading] = []
    step = 0
    while len(out) < events:
        t = start + 30.0 * step
        for i, seg in enumerate(segments):
            if len(out) == events:
                break
            ratio = 0.2 + 0.8 * ((i * 7 + step) % 10) / 10
            out.append(TrafficReading(f"D-{seg.segment_id}", seg.segment_id, t, 5 + (i + step) % 20, 30.0,
                                      round(seg.free_flow_kmh * ratio, 1), 0.1 + 0.05 * (step % 5)))
        step += 1
    return out


async def drain_bare(s: Settings, events: int, roles: tuple[str, ...] = ("traffic_readings",)) -> float:
    """Seconds a bare consumer takes to read `events` messages from the topics of `roles`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False, **kafka_auth(s),
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic_name(role, s), p) for role in roles for p in range(partitions_of(role, s))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            seen += sum(len(msgs) for msgs in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def drain_faust_floor(s: Settings, events: int, path: str = "stock") -> tuple[float, int]:
    """(seconds, events) for a faust agent that only takes events off the topic, on faust's
    stock stream path or on the batch path."""
    group = f"{s.app_id}-{path}"
    env = {**os.environ, "BENCH_TOPIC": topic_name("traffic_readings", s), "BENCH_EVENTS": str(events),
           "BENCH_GROUP": group, "BENCH_PATH": path, "CITYBRAIN_WEB_PORT": str(_free_port())}
    ensure_topics(replace(s, app_id=group))  # its leader topic
    worker = subprocess.Popen([sys.executable, "-m", "streams.tools.bench_floor", "worker", "-l", "warn"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert worker.stdout is not None  # piped
    try:
        for line in worker.stdout:
            if line.startswith("drained "):
                _, taken, seconds = line.split()
                return float(seconds), int(taken)
        raise SystemExit(f"the take-only worker exited with {worker.wait()}")
    finally:
        stop(worker)


def stop(worker: subprocess.Popen) -> None:
    """Stop a benchmark's worker: politely, then not."""
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_env(s: Settings) -> dict[str, str]:
    """The environment of a benchmark's worker: its own topics, keys and group, and a privacy key
    of its own when none is set (benchmarks carry no personal data)."""
    return {**os.environ, "CITYBRAIN_TOPIC_PREFIX": s.topic_prefix, "CITYBRAIN_APP_ID": s.app_id,
            "CITYBRAIN_KEY_PREFIX": s.key_prefix, "CITYBRAIN_WEB_PORT": str(_free_port()),
            "CITYBRAIN_PRIVACY_KEYS": os.environ.get("CITYBRAIN_PRIVACY_KEYS") or f"bench:{secrets.token_hex(16)}"}


async def drain_pipeline(s: Settings, events: int, say: Callable[[str], None],
                         stages: tuple[tuple[str, str, str], ...] = (("traffic", "traffic_readings", "offset"),)
                         ) -> tuple[float, int, int]:
    """(seconds, events measured, peak RSS bytes) for a worker to apply topics to Redis:
    `stages` are (stage, topic role, offset key), `offset.<role>` for a topic read alongside."""
    env = worker_env(s)
    citybrain = Path(sys.executable).parent / "citybrain"
    client = async_redis(s)
    keys = [f"{partition_key(s.key_prefix, stage, p)}:{name}" for stage, role, name in stages
            for p in range(partitions_of(role, s))]
    log = tempfile.NamedTemporaryFile(prefix="citybrain-bench-worker-", suffix=".log", delete=False)
    worker = subprocess.Popen([str(citybrain), "worker", "-l", "warn"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first_at, first_done = None, 0
        while True:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}; see {log.name}")
            offsets = await client.mget(keys)
            done = sum(int(o) + 1 for o in offsets if o is not None)
            now = time.perf_counter()
            if done and first_at is None:
                # Timing starts at the first committed batch, so the worker's start-up and
                # group join are not counted against it.
                first_at, first_done = now, done
            if done >= events and first_at is not None:
                peak = _peak_rss(worker.pid)
                return now - first_at, events - first_done, peak
            await asyncio.sleep(0.01)
    finally:
        stop(worker)
        await client.aclose()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def bench_traffic(settings: Settings, events: int, segment_count: int, say: Callable[[str], None]) -> dict:
    run_id = f"bench{int(time.time())}"
    s = replace(settings, topic_prefix=f"{run_id}.", app_id=run_id, key_prefix=run_id)
    ensure_topics(s)
    segments = bench_segments(segment_count)
    start = (time.time() // 3600 - 48) * 3600  # event time two days back: a replay of the past
    readings = bench_readings(segments, events, start)
    try:
        took = await preload(s, chain(reference_records(CityMap(segments={seg.segment_id: seg for seg in segments})),
                                      (("traffic_readings", r.segment_id, r) for r in readings)))
        say(f"preloaded {events} readings over {segment_count} segments in {took:.1f} s")
        bare_s = await drain_bare(s, events)
        stock_s, stock_measured = drain_faust_floor(s, events, "stock")
        batch_s, batch_measured = drain_faust_floor(s, events, "batch")
        pipe_s, measured, peak = await drain_pipeline(s, events, say)
        figures = {
            "events": events,
            "bare_consumer_eps": events / bare_s,
            "faust_take_only_eps": stock_measured / stock_s,
            "batch_take_only_eps": batch_measured / batch_s,
            "pipeline_eps": measured / pipe_s,
            "peak_rss_mb": peak / 2**20,
        }
        bare = figures["bare_consumer_eps"]
        figures["ratio"] = figures["pipeline_eps"] / bare
        for label, name in (("bare aiokafka consumer", "bare_consumer_eps"),
                            ("faust stock path, take only", "faust_take_only_eps"),
                            ("batch path, take only", "batch_take_only_eps"),
                            ("traffic pipeline (worker)", "pipeline_eps")):
            say(f"{label:<28}: {figures[name]:>10,.0f} events/s   {figures[name] / bare:5.2f} of bare")
        say(f"pipeline / batch path       : {figures['pipeline_eps'] / figures['batch_take_only_eps']:.2f}")
        say(f"worker peak memory          : {figures['peak_rss_mb']:.0f} MiB")
        say("targets: pipeline >= 100,000 events/s and >= 0.15 of bare; peak memory < 250 MiB at 1,000,000 over 50,000 segments")
        return figures
    finally:
        await _clean_up(s)


def people_events(people: int, cars: int, venues: list[Venue], lots: list[Lot], start: float) -> list[tuple[str, str, object]]:
    """Status changes, two scans a person, and each car in and out of a lot two hours later."""
    out: list[tuple[str, str, object]] = []
    for i in range(people):
        pid = f"3301061980{i:08d}"
        out.append(("health_status", pid, HealthCodeStatusChange(pid, ("green", "yellow", "red")[i % 10 % 3], start,
                                                                 None, venues[i % len(venues)].zone_id)))
    for k in range(2):
        for i in range(people):
            venue = venues[(i + k) % len(venues)]
            out.append(("health_scans", venue.venue_id, HealthCodeScan(f"s{k}.{i}", f"3301061980{i:08d}", venue.venue_id,
                                                                       start + 60 + 1800 * k + i % 1800)))
    for i in range(cars):
        lot = lots[i % len(lots)]
        out.append(("parking_events", lot.lot_id, ParkingEvent(f"in.{i}", lot.lot_id, f"浙A{i:06d}", "entry", start + i % 3600)))
    for i in range(cars):
        lot = lots[i % len(lots)]
        out.append(("parking_events", lot.lot_id, ParkingEvent(f"out.{i}", lot.lot_id, f"浙A{i:06d}", "exit",
                                                               start + 7200 + i % 3600)))
    return out


async def bench_people(settings: Settings, events: int, say: Callable[[str], None]) -> dict:
    """Health scans (tokenised at ingestion) and car-park entries and exits (billed), against a
    bare consumer of the same topics, in one run."""
    run_id = f"people{int(time.time())}"
    s = replace(settings, topic_prefix=f"{run_id}.", app_id=run_id, key_prefix=run_id)
    ensure_topics(s)
    zones = [f"Z{i:02d}" for i in range(16)]
    venues = [Venue(f"V{i:04d}", f"Bench venue {i}", zones[i % 16], "shop", 0, 30.2, 120.1) for i in range(400)]
    lots = [Lot(f"L{i:03d}", f"Bench car park {i}", zones[i % 16], 100_000, i % 2 == 0, 5.0, 30.2, 120.1)
            for i in range(40)]
    people = events // 6  # one status and two scans each: half the events
    items = people_events(people, events // 4, venues, lots, (time.time() // 3600 - 48) * 3600)
    city = CityMap(zones={z: Zone(z, f"Bench district {z}", []) for z in zones},
                   venues={v.venue_id: v for v in venues}, lots={lot.lot_id: lot for lot in lots})
    try:
        took = await preload(s, chain(reference_records(city), items))
        say(f"preloaded {len(items)} events ({people} people: statuses and scans; {events // 4} cars in and out) "
            f"in {took:.1f} s")
        roles = ("health_scans", "health_status", "parking_events")
        bare_s = await drain_bare(s, len(items), roles)
        stages = (("health_intake", "health_scans", "offset"), ("health_intake", "health_status", "offset.health_status"),
                  ("parking", "parking_events", "offset"))
        pipe_s, measured, peak = await drain_pipeline(s, len(items), say, stages)
        figures = {"events": len(items), "bare_consumer_eps": len(items) / bare_s, "pipeline_eps": measured / pipe_s,
                   "peak_rss_mb": peak / 2**20}
        say(f"bare aiokafka consumer       : {figures['bare_consumer_eps']:>10,.0f} events/s")
        say(f"people pipeline (worker)     : {figures['pipeline_eps']:>10,.0f} events/s   "
            f"{figures['pipeline_eps'] / figures['bare_consumer_eps']:5.2f} of bare (tokenise, re-key, bill)")
        say(f"worker peak memory           : {figures['peak_rss_mb']:.0f} MiB")
        return figures
    finally:
        await _clean_up(s)


async def preload(s: Settings, items: Iterable[tuple[str, str, Any]]) -> float:
    """Publish (topic role, key, record) in order; the seconds it took."""
    started = time.perf_counter()
    async with Publisher(s) as pub:
        for role, key, record in items:
            await pub.send(role, key, record)
    return time.perf_counter() - started


async def _clean_up(s: Settings) -> None:
    admin = kafka_admin(s)
    try:
        names = [topic_name(role, s) for role in SPECS] + [f"{s.app_id}{x}-__assignor-__leader" for x in ("", "-stock", "-batch")]
        admin.delete_topics([n for n in names if n in set(admin.list_topics())])
    finally:
        admin.close()
    client = async_redis(s)
    async for key in client.scan_iter(match=f"{s.key_prefix}:*", count=1000):
        await client.unlink(key)
    await client.aclose()


async def bench_flood_latency(
    settings: Settings, background_rate: float, probes: int, say: Callable[[str], None]
) -> dict:
    """Time from a depth reading that crosses the closure line being produced to its CAP alert
    being on the alerts topic, while traffic readings stream in at `background_rate` per second."""
    run_id = f"latency{int(time.time())}"
    s = replace(settings, topic_prefix=f"{run_id}.", app_id=run_id, key_prefix=run_id)
    ensure_topics(s)
    segments = bench_segments(2000)
    points = [WaterloggingPoint(f"LP{i:04d}", f"Bench underpass {i}", "Z00", None, 30.25, 120.16, "underpass")
              for i in range(probes)]
    now = time.time()
    log = tempfile.NamedTemporaryFile(prefix="citybrain-latency-worker-", suffix=".log", delete=False)
    env = worker_env(s)
    worker = None
    # The alerts are timed in a process of their own: in this one, the loop that publishes the
    # traffic would delay noticing them.
    spawn = multiprocessing.get_context("spawn")
    ready, done, arrivals = spawn.Event(), spawn.Event(), spawn.Queue()
    receiver = spawn.Process(target=alert_arrivals, args=(s, ready, done, arrivals), daemon=True)
    try:
        async with Publisher(s, in_flight=2_000) as pub:
            for seg in segments:
                await pub.send("segments", seg.segment_id, seg)
            for point in points:
                await pub.send("points", point.point_id, point)
        worker = subprocess.Popen([str(Path(sys.executable).parent / "citybrain"), "worker", "-l", "warn"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        receiver.start()
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the alert receiver did not reach the alerts topic's end")
        sent_at: dict[str, float] = {}  # by point: when its crossing reading was produced (wall clock)

        async def load_and_probe() -> int:
            # Background traffic at the asked rate, a probe every `probe_every` readings.
            async with Publisher(s, in_flight=5_000) as pub:
                await asyncio.sleep(8)  # the worker joins its group
                sent, started = 0, time.perf_counter()
                probe_every = max(1, int(background_rate / 4))  # four probes a second
                while len(sent_at) < probes:
                    seg = segments[sent % len(segments)]
                    await pub.send("traffic_readings", seg.segment_id,
                                   TrafficReading("D", seg.segment_id, now - 60 + sent * 1e-4, 5, 30.0, 40.0, 0.2))
                    sent += 1
                    if sent % probe_every == 0:
                        point = points[len(sent_at)]
                        await pub.flush()
                        sent_at[point.point_id] = time.time()
                        await pub.send("water_depths", point.point_id, WaterDepthReading("W", point.point_id, now, 35.0))
                        await pub.flush()
                    ahead = sent / background_rate - (time.perf_counter() - started)
                    if ahead > 0.01:
                        await pub.flush()
                        await asyncio.sleep(ahead)
                return int(sent / (time.perf_counter() - started))

        achieved = await asyncio.wait_for(load_and_probe(), timeout=600)
        latencies: list[float] = []
        deadline = time.time() + 60
        while len(latencies) < probes and time.time() < deadline:
            try:
                point_id, arrived = await asyncio.to_thread(arrivals.get, True, 1.0)
            except queue.Empty:
                continue
            if point_id in sent_at:
                latencies.append(arrived - sent_at[point_id])
        if not latencies:
            raise RuntimeError(f"no alert for any of {probes} probes within a minute (worker log: {log.name})")
        latencies.sort()
        figures = {
            "background_eps": achieved,
            "probes": len(latencies),
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        }
        say(f"background traffic     : {achieved:,} readings/s (asked {background_rate:,.0f})")
        say(f"closure -> CAP alert   : p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms "
            f"over {len(latencies)} of {probes} probes (targets: p99 < 100 ms at 10,000/s, < 250 ms at 50,000/s)")
        return figures
    finally:
        done.set()
        if receiver.is_alive():
            receiver.join(5)
            receiver.terminate()
        if worker is not None:
            stop(worker)
        await _clean_up(s)


def alert_arrivals(s: Settings, ready: Any, done: Any, arrivals: Any) -> None:
    """Put (point id, wall time) on `arrivals` for each first Alert of a waterlogging point that
    reaches the alerts topic after `ready` is set, until `done` is."""

    async def receive() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False,
                                    **kafka_auth(s), fetch_max_wait_ms=5)
        await consumer.start()
        try:
            tps = [TopicPartition(topic_name("alerts", s), p) for p in range(partitions_of("alerts", s))]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)  # the end resolved now, not at the first fetch
            ready.set()
            while not done.is_set():
                for msgs in (await consumer.getmany(timeout_ms=100)).values():
                    arrived = time.time()
                    for m in msgs:
                        alert = orjson.loads(m.value)
                        point_id = dict(alert["info"][0]["parameters"]).get("point_id")
                        if point_id is not None and alert["msg_type"] == "Alert":
                            arrivals.put((point_id, arrived))
        finally:
            await consumer.stop()

    asyncio.run(receive())


# ---------------------------------------------------------------------------------------------
# Webhook dispatcher: deliveries per second to a local receiver, and the latency it adds


class _Receiver:
    """A loopback HTTP endpoint that answers 204 and notes when each delivery arrived."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.arrivals: dict[str, list[tuple[float, bytes]]] = {}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._take)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _take(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrivals.setdefault(request.path, []).append((time.time(), body))
        return web.Response(status=204)

    def count(self) -> int:
        return sum(len(v) for v in self.arrivals.values())


def bench_alerts(count: int, tag: str) -> list[Alert]:
    """`count` alerts of distinct incidents, as the flood brain words them."""
    out = []
    for i in range(count):
        info = bilingual({"zh-CN": ("暴雨橙色预警", "累计雨量已达标准。", "避免前往低洼地带。"),
                          "en-US": ("Orange rainstorm warning", "Rainfall meets the orange signal.",
                                    "Keep away from low roads.")},
                         "Met", "Rainstorm", "Prepare", "Expected", "Severe", "Observed", [("zone_id", f"Z{i % 9}")],
                         [Area(f"District Z{i % 9}", ["30.2,120.1 30.2,120.2 30.3,120.2 30.2,120.1"])])
        _, alert = Incident(f"bench.{tag}.{i}").message(Cap(), "Alert", time.time(), info)
        out.append(alert)
    return out


async def post_directly(url: str, secret: str, alerts: list[Alert], concurrency: int) -> float:
    """Seconds a bare aiohttp client takes to POST the same signed bodies: the reference."""
    from schemas.webhooks import Subscription, payload, signature

    sub = Subscription("reference", url, [secret])
    bodies = [(f"reference.{a.identifier}", payload(a, time.time(), sub)) for a in alerts]
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def post(delivery_id: str, body: str) -> None:
            async with slots:
                ts = int(time.time())
                headers = {"Content-Type": "application/json", "webhook-id": delivery_id, "webhook-timestamp": str(ts),
                           "webhook-signature": signature([secret], delivery_id, ts, body)}
                async with session.post(url, data=body.encode(), headers=headers) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(post(i, b) for i, b in bodies))
        return time.perf_counter() - started


async def bench_webhooks(settings: Settings, messages: int, endpoints: int, rate: float, probes: int,
                         say: Callable[[str], None]) -> dict:
    """Deliveries per second of a worker's dispatcher to `endpoints` loopback endpoints, against a
    bare client posting the same bodies; then the latency it adds at `rate` alerts a second."""
    run_id = f"bench{int(time.time())}"
    s = replace(settings, topic_prefix=f"{run_id}.", app_id=run_id, key_prefix=run_id)
    ensure_topics(s)
    receiver = _Receiver()
    await receiver.start()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    subs = tempfile.NamedTemporaryFile("wb", prefix="citybrain-bench-webhooks-", suffix=".json", delete=False)
    subs.write(orjson.dumps([{"subscription_id": f"e{i}", "url": f"http://127.0.0.1:{receiver.port}/e{i}",
                              "secrets": [secret], "allow_private": True} for i in range(endpoints)]))
    subs.close()
    env = {**worker_env(s), "CITYBRAIN_WEBHOOKS_FILE": subs.name}
    log = tempfile.NamedTemporaryFile(prefix="citybrain-webhooks-worker-", suffix=".log", delete=False)
    worker = None
    try:
        alerts = bench_alerts(messages, "load")
        reference_s = await post_directly(f"http://127.0.0.1:{receiver.port}/reference", secret, alerts,
                                          settings.webhooks.concurrency * endpoints)
        receiver.arrivals.clear()
        async with Publisher(s) as pub:
            for a in alerts:
                await pub.send("alerts", a.incidents, a)
        say(f"preloaded {messages} alerts for {endpoints} endpoint(s)")
        worker = subprocess.Popen([str(Path(sys.executable).parent / "citybrain"), "worker", "-l", "warn"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        expected = messages * endpoints
        while receiver.count() < expected:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}; see {log.name}")
            await asyncio.sleep(0.05)
        times = sorted(t for arrivals in receiver.arrivals.values() for t, _ in arrivals)
        dispatch_s = times[-1] - times[0]

        # Latency: alerts at a steady rate into the running worker, each timed from the moment Kafka
        # has it (the payload's timestamp) to its arrival.
        receiver.arrivals.clear()
        # Latency is timed in a steady state: the load's outcomes are applied first.
        client = async_redis(s)
        pending = [f"{partition_key(s.key_prefix, 'webhooks', p)}:pending" for p in range(partitions_of("alerts", s))]
        while sum([await client.hlen(k) for k in pending]):
            await asyncio.sleep(0.1)
        await client.aclose()
        async with Publisher(s, in_flight=1) as pub:
            for a in bench_alerts(probes, "probe"):
                await pub.send("alerts", a.incidents, a)
                await pub.flush()
                await asyncio.sleep(1.0 / rate)
        while receiver.count() < probes * endpoints:
            await asyncio.sleep(0.05)
        added = sorted(t - parse_time(orjson.loads(body)["timestamp"])
                       for arrivals in receiver.arrivals.values() for t, body in arrivals)
        figures = {
            "deliveries": expected, "reference_dps": messages / reference_s, "dispatcher_dps": expected / dispatch_s,
            "p50_ms": 1000 * added[len(added) // 2], "p90_ms": 1000 * added[int(len(added) * 0.9)],
            "p99_ms": 1000 * added[min(len(added) - 1, int(len(added) * 0.99))],
        }
        say(f"bare aiohttp client    : {figures['reference_dps']:>8,.0f} deliveries/s "
            f"(the same bodies, signed, {reference_s:.2f} s)")
        say(f"webhook dispatcher     : {figures['dispatcher_dps']:>8,.0f} deliveries/s ({expected} in {dispatch_s:.2f} s)")
        say(f"ratio dispatcher / bare: {figures['dispatcher_dps'] / figures['reference_dps']:.2f}")
        say(f"added latency at {rate:g} alerts/s: p50 {figures['p50_ms']:.0f} ms, p90 {figures['p90_ms']:.0f} ms, "
            f"p99 {figures['p99_ms']:.0f} ms "
            f"(alert on Kafka to delivery, {len(added)} deliveries)")
        return figures
    finally:
        if worker is not None:
            stop(worker)
        await receiver.runner.cleanup()
        os.unlink(subs.name)
        await _clean_up(s)
