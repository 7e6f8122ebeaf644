"""The CAP feed: the city's standing public alerts as an Atom feed, each entry linking to its
message as CAP 1.2 XML, as the OASIS "Example Practices: CAP Feeds" and public alert
aggregators ask.

  alerts (by incident) -> cap_feed -> per incident: its latest public message, until it expires
  GET /cap/feed.atom[?zone=Z11&category=Met&lang=en-US]  and  GET /cap/alerts/{identifier}.xml  (any worker)

An incident's entry is its latest message: an Update replaces its Alert in the feed, and an
ended incident's Cancel stays until it expires (an hour), so a reader that polls now and then
still learns that it ended. Operational (Restricted) messages are not published here.
"""

from __future__ import annotations

import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from schemas.cap import NAMESPACE, Alert, cap_time, to_xml
from schemas.contract import parse_time
from streams import runtime
from streams.app import app
from streams.clock import is_live
from streams.effects import Effects, Source
from streams.settings import settings
from streams.stage import Stage
from streams.table import Table, Value

ATOM = "http://www.w3.org/2005/Atom"
CAP_XML = "application/cap+xml"


def expires_at(alert: Alert) -> float:
    """When a message stops standing: its info's latest expiry (every info carries one)."""
    return max(parse_time(i.expires) for i in alert.info if i.expires is not None)


def shown(alert: Alert, zone: str | None, category: str | None) -> bool:
    """Whether a standing message passes the feed's filters: the zone it names, its category."""
    info = alert.info[0]
    return (zone is None or alert.parameter("zone_id") == zone) and (category is None or info.category == category)


class CapFeedStage(Stage):
    """Per partition of the alerts: each incident's latest public message, until it expires."""

    name = "cap_feed"
    source = "alerts"
    contract = Alert
    standing = Table(Alert)  # by incident
    clock = Value(float, -math.inf)  # the newest message's time: the partition's event time

    def on_event(self, alert: Alert, source: Source, effects: Effects) -> None:
        if alert.scope != "Public":
            return  # for the operations room: its webhooks and the alerts topic
        self.standing[alert.incidents] = alert  # the incident's messages arrive in order on its partition
        self.clock = max(self.clock, parse_time(alert.sent))

    def drop_expired(self, now: float) -> None:
        for incident in [i for i, a in self.standing.items() if expires_at(a) <= now]:
            del self.standing[incident]

    def flush(self, effects: Effects) -> None:
        self.drop_expired(self.clock)

    def on_idle(self, wall_now: float, effects: Effects) -> None:
        # A live feed ages by the wall clock as well, until every message it held has expired;
        # a replay ages by its own messages' time.
        if is_live(self.clock, wall_now, 2 * settings().cap.expires_s):
            self.drop_expired(wall_now)


runtime.stage(CapFeedStage)


async def standing_alerts() -> list[Alert]:
    """Every partition's standing messages, newest first (then by identifier), read from Redis:
    any worker answers for the whole city."""
    rows = await runtime.read_table(CapFeedStage, "standing")
    return sorted(rows.values(), key=lambda a: (-parse_time(a.sent), a.identifier))


def atom_feed(alerts: Iterable[Alert], base_url: str, now: str, language: str | None = None) -> bytes:
    """The Atom document of the standing messages: one entry each, linking to its CAP XML, with
    the CAP elements aggregators sort and filter by; titled in `language` where a message has it.
    Ids are the sender's and the messages' own, whatever address the feed was read at."""
    ET.register_namespace("", ATOM)
    ET.register_namespace("cap", NAMESPACE)
    s = settings()
    feed = ET.Element(f"{{{ATOM}}}feed")
    alerts = list(alerts)

    def add(parent: ET.Element, tag: str, text: str | None = None, ns: str = ATOM, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ns}}}{tag}", attrs)
        element.text = text
        return element

    add(feed, "id", f"urn:cap-feed:{s.cap.sender}")
    add(feed, "title", f"{s.cap.sender_name}: public alerts")
    add(feed, "updated", alerts[0].sent if alerts else now)
    add(add(feed, "author"), "name", s.cap.sender_name)
    add(feed, "link", rel="self", href=f"{base_url}/cap/feed.atom")
    for alert in alerts:
        info = alert.info_in(language)
        url = f"{base_url}/cap/alerts/{alert.identifier}.xml"
        entry = add(feed, "entry")
        add(entry, "id", f"urn:cap-alert:{alert.identifier}")
        add(entry, "title", info.headline)
        add(entry, "updated", alert.sent)
        add(entry, "published", alert.sent)
        add(add(entry, "author"), "name", info.sender_name or s.cap.sender_name)
        add(entry, "summary", info.description)
        add(entry, "category", term=info.category)
        add(entry, "link", rel="alternate", type=CAP_XML, href=url)
        for tag, text in (("identifier", alert.identifier), ("sent", alert.sent), ("status", alert.status),
                          ("msgType", alert.msg_type), ("event", info.event), ("urgency", info.urgency),
                          ("severity", info.severity), ("certainty", info.certainty), ("expires", info.expires),
                          ("areaDesc", "; ".join(a.area_desc for a in info.areas))):
            add(entry, tag, text, ns=NAMESPACE)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(feed, encoding="utf-8")


@app.page("/cap/feed.atom")
async def serve_feed(web, request):  # noqa: ANN001
    """The standing public alerts, optionally of one zone (`zone`) or CAP category (`category`),
    titled in one language (`lang`, as CAP names it: zh-CN, en-US)."""
    zone, category = request.query.get("zone"), request.query.get("category")
    alerts = [a for a in await standing_alerts() if shown(a, zone, category)]
    base = settings().cap.feed_url.rstrip("/") or f"{request.scheme}://{request.host}"
    body = atom_feed(alerts, base, cap_time(time.time()), request.query.get("lang"))
    return web.bytes(body, content_type="application/atom+xml")


@app.page("/cap/alerts/{identifier}.xml")
async def serve_message(web, request, identifier: str):  # noqa: ANN001
    """One standing message as CAP 1.2 XML; 404 once it no longer stands."""
    alert = next((a for a in await standing_alerts() if a.identifier == identifier), None)
    if alert is None:
        return web.text(f"no standing CAP message {identifier}\n", status=404)
    return web.bytes(to_xml(alert).encode(), content_type=CAP_XML)
