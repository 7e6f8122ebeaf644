"""The CAP feed: each incident's latest public message stands until it expires, and the Atom
document reads in a feed parser with a link to each message's CAP XML."""

from __future__ import annotations

import feedparser

from agents.cap_feed import CapFeedStage, atom_feed, shown
from schemas.cap import Incident, bilingual, cap_time, circle_area, published
from streams.effects import Effects, Source
from streams.reference import Reference
from streams.settings import Settings
from streams.state import Batch

S = Settings()
T0 = 1_784_534_400.0  # 2026-07-20T08:00:00Z


def message(incident: Incident, msg_type, at, *, category="Met", zone="Z1", operational=False):
    texts = {"zh-CN": ("积水", "积水20厘米。", "绕行。"), "en-US": ("Water on Wensan Rd", "20 cm of water.", "Avoid it.")}
    info = bilingual(texts, category, "Road waterlogging", "Avoid", "Immediate", "Moderate", "Observed",
                     [("zone_id", zone)], [circle_area("Wensan Rd underpass", 30.27, 120.13, 0.3)])
    return incident.message(S.cap, msg_type, at, info, operational=operational)


def feed_stage(messages):
    stage, e = CapFeedStage(0, S, Reference(S)), Effects("cap_feed", Batch("cb:{cap_feed.0}", 0, {}))
    stage.restore({})
    for i, m in enumerate(messages):
        for part in published(m):
            stage.on_event(part, Source("alerts", 0, i, m.incidents.encode(), b"{}"), e)
    stage.flush(e)
    return stage


def test_an_incident_stands_as_its_latest_message_and_an_ended_one_until_its_cancel_expires():
    flood, first = message(Incident("waterlogging.P1.1"), "Alert", T0)
    flood, update = message(flood, "Update", T0 + 600)
    _, cancel = message(flood, "Cancel", T0 + 1200)
    stage = feed_stage([first, update])
    assert [a.identifier for a in stage.standing.values()] == [update.identifier]
    stage = feed_stage([first, update, cancel])
    (ended,) = stage.standing.values()
    assert ended.msg_type == "Cancel" and ended.identifier.endswith(".cancel")
    # An hour after the Cancel (the all clear's expiry, as another message tells the partition's time).
    _, later = message(Incident("waterlogging.P2.1"), "Alert", T0 + 1200 + S.cap.all_clear_expires_s)
    stage = feed_stage([first, update, cancel, later])
    assert list(stage.standing) == ["waterlogging.P2.1"]


def test_an_operational_message_is_not_in_the_public_feed():
    _, fault = message(Incident("sensor.P1.1"), "Alert", T0, category="Infra", operational=True)
    assert not feed_stage([fault]).standing


def test_the_feed_parses_with_a_cap_link_per_entry_and_filters_by_zone_and_category():
    _, flood = message(Incident("waterlogging.P1.1"), "Alert", T0)
    _, jam = message(Incident("congestion.S1.1"), "Alert", T0 + 60, category="Transport", zone="Z2")
    document = atom_feed([jam, flood], "http://city.example:6066", cap_time(T0 + 120))
    parsed = feedparser.parse(document)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.feed.updated == jam.sent
    assert [e.title for e in parsed.entries] == ["积水", "积水"]
    links = [[(link.rel, link.type, link.href) for link in e.links] for e in parsed.entries]
    assert links == [[("alternate", "application/cap+xml", f"http://city.example:6066/cap/alerts/{m.identifier}.xml")]
                     for m in (jam, flood)]
    assert [e.tags[0].term for e in parsed.entries] == ["Transport", "Met"]
    assert [e.cap_event for e in parsed.entries] == ["Road waterlogging"] * 2
    assert [e.cap_expires for e in parsed.entries] == [jam.info[0].expires, flood.info[0].expires]
    assert [shown(m, "Z1", None) for m in (jam, flood)] == [False, True]
    assert [shown(m, None, "Transport") for m in (jam, flood)] == [True, False]
    english = feedparser.parse(atom_feed([flood], "http://city.example:6066", cap_time(T0), "en-US"))
    assert [(e.title, e.summary) for e in english.entries] == [("Water on Wensan Rd", "20 cm of water.")]
    assert feedparser.parse(atom_feed([], "http://city.example:6066", cap_time(T0))).entries == []
