"""Alert and notice delivery over webhooks (Standard Webhooks).

  alerts + notices (by incident, by addressee) + webhooks.outcomes (read alongside) -> webhooks
      -> per partition: the deliveries still to make, in Redis, fenced like every stage's state
  deliver_webhooks (a task of every worker)
      -> attempts the due deliveries of the partitions this worker holds, one queue per endpoint,
         and sends each attempt's outcome back to the delivery's partition

A message matching a subscription becomes a `Delivery` whose id is the `webhook-id` of every
attempt, so a receiver drops what it has already taken. Deliveries live in Redis until they are
delivered, given up on or their endpoint is gone, so a restarted worker picks up the retries of
the one before. Messages with one order key (an incident's, or one addressee's) reach an endpoint
in order: an Update never overtakes its Alert. Each endpoint has its own attempts in flight, so a
slow or dead one never holds up the others.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import ipaddress
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Container, Iterable
from dataclasses import replace
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from shapely.geometry import Point, Polygon

from schemas.cap import SEVERITY_RANK, Alert, Area, metres_between, zone_area
from schemas.contract import encode, from_dict, iso
from schemas.records import Notice
from schemas.reference import Zone
from schemas.webhooks import DeadDelivery, Delivery, DeliveryOutcome, Subscription, payload, secret_bytes, signature
from streams import metrics, runtime, topics
from streams.app import app
from streams.effects import Effects, Source
from streams.processor import Processor
from streams.settings import Settings, settings
from streams.stage import Stage
from streams.table import Table
from streams.topics import partitions_of

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Subscriptions


def check_subscription(sub: Subscription) -> Subscription:
    """A subscription fit to deliver to, or ValueError saying what is wrong with it."""
    url = urlsplit(sub.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{sub.subscription_id}: url must be http(s)://host/...")
    if not sub.secrets:
        raise ValueError(f"{sub.subscription_id}: needs at least one secret")
    for secret in sub.secrets:
        if not secret.startswith("whsec_") or not secret_bytes(secret):
            raise ValueError(f"{sub.subscription_id}: a secret is whsec_ followed by base64")
    if sub.area and (len(sub.area) < 3 or not Polygon([(lon, lat) for lat, lon in sub.area]).is_valid):
        raise ValueError(f"{sub.subscription_id}: area must be a ring of at least three (lat, lon) that does not cross itself")
    if sub.near is not None and not sub.near[2] > 0:
        raise ValueError(f"{sub.subscription_id}: near is (lat, lon, metres), with metres above 0")
    if not sub.allow_private and refused_address(url.hostname):
        raise ValueError(f"{sub.subscription_id}: {url.hostname} is a private or loopback address; "
                         "set allow_private to deliver there")
    return sub


def load_subscriptions(path: str) -> dict[str, Subscription]:
    """The subscriptions in a JSON file (a list of Subscription objects), checked; none without a file."""
    if not path:
        return {}
    try:
        entries = orjson.loads(Path(path).read_bytes())
        subs = [check_subscription(from_dict(Subscription, e)) for e in entries]
    except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"webhook subscriptions in {path}: {getattr(exc, 'reason', exc)}") from None
    by_id = {s.subscription_id: s for s in subs}
    if len(by_id) != len(subs):
        raise ValueError(f"webhook subscriptions in {path}: subscription ids must be unique")
    return by_id


@cache
def file_subscriptions() -> dict[str, Subscription]:
    """The subscriptions of the settings' file, read once: a worker refuses to start with a bad one."""
    return load_subscriptions(settings().webhooks.file)


def subscriptions() -> dict[str, Subscription]:
    """Every subscription: those made through the API (`/webhooks/subscriptions`, kept on a
    compacted topic that every worker follows with the city map) and the file's."""
    made = runtime.live().reference.subscriptions if runtime.live.cache_info().currsize else {}
    return {**made, **file_subscriptions()}


def refused_address(host: str) -> str | None:
    """Why deliveries to this address are refused by default (private, loopback, ...), or None."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "localhost" if host.lower() == "localhost" or host.lower().endswith(".localhost") else None
    for reason in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    return None


# ---------------------------------------------------------------------------------------------
# Rules (pure)


def matches(sub: Subscription, role: str, record: Alert | Notice, zone: Zone | None = None) -> bool:
    """Whether a message is one the subscription wants. A notice is where its zone is (`zone`,
    from the city map: a notice of a zone the map does not know reaches no area)."""
    if role not in sub.sources:
        return False
    if isinstance(record, Notice):
        placed = not (sub.area or sub.near) or (zone is not None and reaches(sub, [zone_area(zone)]))
        return ((not sub.events or record.kind in sub.events) and (not sub.zones or record.zone_id in sub.zones)
                and not (sub.categories or sub.msg_types or sub.min_severity) and placed)
    info = record.info[0]
    return ((not sub.categories or info.category in sub.categories)
            and (not sub.events or info.event in sub.events)
            and (not sub.msg_types or record.msg_type in sub.msg_types)
            and (not sub.min_severity or SEVERITY_RANK[info.severity] >= SEVERITY_RANK[sub.min_severity])
            and (not sub.zones or record.parameter("zone_id") in sub.zones)
            and reaches(sub, info.areas))


def reaches(sub: Subscription, areas: list[Area]) -> bool:
    """Whether an alert's areas reach the subscription's polygon or come within its `near`
    (a subscription asking neither: they do)."""
    if not sub.area and sub.near is None:
        return True
    shapes = [shape for area in areas for shape in area.shapes()]
    if sub.area and any(metres_between(g, Polygon([(lon, lat) for lat, lon in sub.area])) <= r for g, r in shapes):
        return True
    if sub.near is not None:
        lat, lon, metres = sub.near
        return any(metres_between(g, Point(lon, lat)) <= r + metres for g, r in shapes)
    return False


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta seconds or an HTTP date), if any."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # RFC 9110: ASCII digits only
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def next_step(d: Delivery, status: int | None, error: str | None, retry_after: float | None, now: float, s: Settings,
              rng: random.Random) -> DeliveryOutcome:
    """What an attempt comes to: delivered on 2xx, the endpoint gone on 410, else a retry after
    exponential backoff with full jitter (or the endpoint's Retry-After, if longer), until the
    attempts run out."""
    attempt = d.attempt + 1
    if status is not None and 200 <= status < 300:
        return DeliveryOutcome(d.delivery_id, d.subscription_id, attempt, "delivered", now, status)
    error = error or f"HTTP {status}"
    if status == 410:
        return DeliveryOutcome(d.delivery_id, d.subscription_id, attempt, "gone", now, status, error)
    if attempt >= s.webhooks.max_attempts:
        return DeliveryOutcome(d.delivery_id, d.subscription_id, attempt, "exhausted", now, status, error)
    wait = rng.uniform(0, min(s.webhooks.backoff_max_s, s.webhooks.backoff_s * 2 ** (attempt - 1)))
    if retry_after is not None:
        wait = max(wait, min(retry_after, s.webhooks.backoff_max_s))
    return DeliveryOutcome(d.delivery_id, d.subscription_id, attempt, "retry", now, status, error, now + wait)


class DeliveryQueue:
    """A partition's pending deliveries: each order key's in sequence, and the first of each
    scheduled by its next attempt, so finding what is due never scans the whole backlog."""

    def __init__(self, deliveries: Iterable[Delivery] = ()):
        self.pending: dict[str, Delivery] = {}
        self.lines: dict[tuple[str, str], deque[str]] = {}  # (subscription, order key) -> ids by seq
        self.schedule: list[tuple[float, int, str]] = []  # (next attempt, seq, id) of first deliveries
        for d in sorted(deliveries, key=lambda d: (d.seq, d.delivery_id)):
            self.add(d)

    def add(self, d: Delivery) -> None:
        self.pending[d.delivery_id] = d
        line = self.lines.setdefault((d.subscription_id, d.order_key), deque())
        line.append(d.delivery_id)
        if len(line) == 1:
            heapq.heappush(self.schedule, (d.next_at, d.seq, d.delivery_id))

    def remove(self, delivery_id: str) -> None:
        """Take a delivery out; the next of its order key becomes due in its turn."""
        d = self.pending.pop(delivery_id, None)
        line = self.lines.get((d.subscription_id, d.order_key)) if d else None
        if d is None or line is None or delivery_id not in line:
            return
        was_first = line[0] == delivery_id
        line.remove(delivery_id)
        if not line:
            del self.lines[(d.subscription_id, d.order_key)]
        elif was_first:
            head = self.pending[line[0]]
            heapq.heappush(self.schedule, (head.next_at, head.seq, head.delivery_id))

    def reschedule(self, d: Delivery) -> None:
        """A first delivery after an attempt: kept, and due again at `next_at`."""
        self.pending[d.delivery_id] = d
        heapq.heappush(self.schedule, (d.next_at, d.seq, d.delivery_id))

    def take_due(self, now: float, disabled: Container[str] = frozenset()) -> list[Delivery]:
        """The first delivery of each order key whose time has come, oldest appointment first;
        each is handed out once, until it is rescheduled."""
        out = []
        while self.schedule and self.schedule[0][0] <= now:
            at, _, delivery_id = heapq.heappop(self.schedule)
            d = self.pending.get(delivery_id)
            line = self.lines.get((d.subscription_id, d.order_key)) if d else None
            if d is None or d.next_at != at or not line or line[0] != delivery_id or d.subscription_id in disabled:
                continue  # done, moved on, not first in line, or its endpoint is gone
            out.append(d)
        return out


# ---------------------------------------------------------------------------------------------
# Stage: the deliveries still to make, per partition


delivery_due = asyncio.Event()  # set when a partition has new deliveries: the courier need not wait


class WebhooksStage(Stage):
    """Per partition of the alerts and notices: deliveries queued, retried, done or given up."""

    name = "webhooks"
    source = "alerts"
    contract = Alert
    alongside = {"notices": Notice, "webhook_outcomes": DeliveryOutcome}  # read alongside the alerts
    pending = Table(Delivery)  # by delivery id: the deliveries still to make
    disabled = Table(str)  # by subscription whose endpoint answered 410 Gone: since when

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.queue = DeliveryQueue(self.pending.values())
        self.queued = False

    def due(self, now: float) -> list[Delivery]:
        """The deliveries whose time has come, each handed out once until it is rescheduled."""
        return self.queue.take_due(now, self.disabled)

    def retry_later(self, d: Delivery, at: float) -> None:
        """An attempt whose outcome could not be recorded is made again at `at` (in memory: the
        delivery is still pending in Redis), unless the delivery has moved on meanwhile."""
        if self.queue.pending.get(d.delivery_id) == d:
            self.queue.reschedule(replace(d, next_at=at))

    def on_event(self, m: Alert | Notice | DeliveryOutcome, source: Source, effects: Effects) -> None:
        if isinstance(m, DeliveryOutcome):
            self.on_outcome(m, effects)
            return
        role, message_id, order_key = (("notices", m.notice_id, m.to) if isinstance(m, Notice)
                                       else ("alerts", m.identifier, m.incidents))
        queued_at = source.timestamp or time.time()
        zone = self.reference.city.zones.get(m.zone_id) if isinstance(m, Notice) else None
        for sub in subscriptions().values():
            if sub.subscription_id in self.disabled or not matches(sub, role, m, zone):
                continue
            d = Delivery(f"{sub.subscription_id}.{message_id}", sub.subscription_id, order_key, source.offset,
                         payload(m, queued_at, sub), queued_at, 0, queued_at)
            self.queue.add(d)
            self.pending[d.delivery_id] = d
            self.queued = True

    def on_outcome(self, o: DeliveryOutcome, effects: Effects) -> None:
        if o.outcome == "enabled":  # an operator re-enabled an endpoint a 410 had disabled (agents/webhook_api.py)
            if o.subscription_id in self.disabled:
                log.warning("webhook endpoint of %s enabled again", o.subscription_id)
                del self.disabled[o.subscription_id]
            return
        if o.outcome == "gone" and o.subscription_id not in self.disabled:
            # Every partition hears of it: the endpoint takes nothing more from any of them.
            log.warning("webhook endpoint of %s answered 410 Gone: disabled", o.subscription_id)
            self.disabled[o.subscription_id] = iso(o.at)
            for d in [d for d in self.pending.values() if d.subscription_id == o.subscription_id]:
                self.give_up(d, d.attempt + (d.delivery_id == o.delivery_id), "endpoint gone (HTTP 410)", o, effects)
            return
        d = self.pending.get(o.delivery_id)
        if d is None or o.attempt <= d.attempt:
            return  # an outcome already applied, or of a delivery already done
        if o.outcome == "delivered":
            self.queue.remove(d.delivery_id)
            del self.pending[d.delivery_id]
            self.queued = True  # the next of its order key may go
        elif o.outcome == "exhausted":
            self.give_up(d, o.attempt, o.error or "attempts exhausted", o, effects)
        else:
            d = replace(d, attempt=o.attempt, next_at=o.next_at or o.at, last_error=o.error)
            self.queue.reschedule(d)
            self.pending[d.delivery_id] = d

    def give_up(self, d: Delivery, attempts: int, reason: str, o: DeliveryOutcome, effects: Effects) -> None:
        self.queue.remove(d.delivery_id)
        del self.pending[d.delivery_id]
        self.queued = True
        effects.send(topics.webhook_dead_letters, d.subscription_id,
                     DeadDelivery(d.delivery_id, d.subscription_id, attempts, reason, o.status, d.body, o.at))

    def gauges(self) -> metrics.Gauges:
        return metrics.gauge("citybrain_webhook_pending_deliveries", len(self.pending))

    def flush(self, effects: Effects) -> None:
        if self.queued:
            delivery_due.set()
            self.queued = False


runtime.stage(WebhooksStage)


# ---------------------------------------------------------------------------------------------
# Courier: the attempts themselves


class Courier:
    """Attempts the due deliveries of the partitions this worker holds."""

    def __init__(self, s: Settings, dispatch: Processor[WebhooksStage]):
        self.settings = s
        self.dispatch = dispatch
        self.slots: dict[str, asyncio.Semaphore] = {}  # per endpoint: attempts in flight
        self.rng = random.Random()

    async def due(self) -> list[tuple[int, Delivery]]:
        """The deliveries whose time has come, by partition, each handed out once."""
        async with self.dispatch.between_batches() as stages:
            now = time.time()
            return [(p, d) for p, stage in stages.items() for d in stage.due(now)]

    async def run(self) -> None:
        headers = {"User-Agent": "citybrain-webhooks"}
        # Subscriptions that allow private addresses connect through a resolver that does not refuse them.
        async with (aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(resolver=PublicResolver())) as public,
                    aiohttp.ClientSession(headers=headers) as private):
            while True:
                try:
                    await asyncio.wait_for(delivery_due.wait(), 0.25)
                except TimeoutError:
                    pass
                delivery_due.clear()
                for p, d in await self.due():
                    sub = subscriptions().get(d.subscription_id)
                    asyncio.ensure_future(self.deliver(private if sub and sub.allow_private else public, p, d))

    async def deliver(self, session: aiohttp.ClientSession, partition: int, d: Delivery) -> None:
        """One attempt, and its outcome sent back to the partition; if that fails, the attempt is
        made again later (with the same webhook-id)."""
        try:
            outcome = await self.try_once(session, d)
            partitions = range(partitions_of("webhook_outcomes")) if outcome.outcome == "gone" else [partition]
            for p in partitions:
                await topics.webhook_outcomes.send(key=d.delivery_id.encode(), value=encode(outcome), partition=p)
        except asyncio.CancelledError:
            raise
        except Exception:  # Kafka unreachable, or anything unforeseen: never strand the delivery
            log.exception("webhook delivery %s: outcome could not be recorded; will attempt again", d.delivery_id)
            async with self.dispatch.between_batches() as stages:
                stage = stages.get(partition)
                if stage is not None:
                    stage.retry_later(d, time.time() + self.settings.webhooks.backoff_s)

    async def try_once(self, session: aiohttp.ClientSession, d: Delivery) -> DeliveryOutcome:
        sub = subscriptions().get(d.subscription_id)
        slot = self.slots.setdefault(d.subscription_id, asyncio.Semaphore(self.settings.webhooks.concurrency))
        async with slot:
            status, error, retry_after, refused = (await self.attempt(session, sub, d) if sub
                                                   else (None, "unsubscribed", None, True))
        if refused:  # no later attempt would fare better
            outcome = DeliveryOutcome(d.delivery_id, d.subscription_id, d.attempt + 1, "exhausted", time.time(), None, error)
        else:
            outcome = next_step(d, status, error, retry_after, time.time(), self.settings, self.rng)
        metrics.WEBHOOK_DELIVERIES.labels(d.subscription_id, outcome.outcome).inc()
        if outcome.outcome == "delivered":
            metrics.WEBHOOK_DELAY.observe(max(0.0, outcome.at - d.queued_at))
        elif outcome.outcome != "retry":
            log.warning("webhook delivery %s: %s after %d attempts (%s)", d.delivery_id, outcome.outcome,
                        outcome.attempt, outcome.error)
        return outcome

    async def attempt(self, session: aiohttp.ClientSession, sub: Subscription, d: Delivery
                      ) -> tuple[int | None, str | None, float | None, bool]:
        """(HTTP status, error, Retry-After seconds, whether the address was refused) of one POST."""
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": d.delivery_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(sub.secrets, d.delivery_id, timestamp, d.body)}
        started = time.perf_counter()
        try:
            async with session.post(sub.url, data=d.body.encode(), headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=self.settings.webhooks.timeout_s)) as resp:
                await resp.read()
                return resp.status, None, retry_after_s(resp.headers.get("Retry-After"), time.time()), False
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                return None, f"refused: {exc.os_error}", None, True
            return None, f"{type(exc).__name__}: {exc}", None, False
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}".strip(": "), None, False
        finally:
            metrics.WEBHOOK_ATTEMPT_SECONDS.observe(time.perf_counter() - started)


class RefusedAddress(OSError):
    """A host that resolves to an address deliveries are refused to."""


class PublicResolver(ThreadedResolver):
    """Resolves as usual, and refuses a host with any private or loopback address. The address
    checked is the one connected to (and cached by the connector), so DNS cannot swap it after
    the check. IP literals never reach a resolver; subscriptions are checked for those when loaded."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await super().resolve(host, port, family)
        for a in addresses:
            reason = refused_address(str(a["host"]))
            if reason:
                raise RefusedAddress(f"{host} resolves to a {reason} address")
        return addresses


@app.task
async def deliver_webhooks() -> None:
    await Courier(settings(), runtime.processor(WebhooksStage)).run()
