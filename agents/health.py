"""Health codes and people's safety codes: who is which colour, where they were last seen, what a
venue should do with the code it scanned, and which zones are a health risk.

  health.scans (by venue) + health.status_changes   -> health_intake       -> tokenised, re-keyed by person
  people.scans (by person) + people.status + notices -> people
      -> per person: health colour, last known zone, safety code (Redis, expires after `person_ttl_s`);
         notices to venues for yellow and red codes; whereabouts by zone; shelter check-ins
  health.zone_scans (by zone)                        -> zone_health       -> per zone and window: scans
                                                        by colour (Redis); Health alerts with hysteresis

A person is a token from the moment their event is read (streams/privacy.py); zone-level views
count people and never name them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

from agents.alerts import held_since, send_alert, send_notice
from schemas.cap import Alert, Incident, MsgType, Severity, bilingual, cap_id, zone_area
from schemas.contract import Rejected, iso
from schemas.events import HealthCodeScan, HealthCodeStatusChange
from schemas.records import Colour, Notice, NoticeKind, PersonScan, PersonStatus, Whereabouts, ZoneScan
from schemas.reference import Venue, Zone
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import Table, Value
from streams.windowed import WindowedStage

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Rules (pure)


@dataclass(frozen=True, slots=True)
class Person:
    """What the city brain keeps of one person token, and only while it is needed."""

    colour: Colour = "green"  # health code
    colour_at: float | None = None
    zone_id: str | None = None  # last known location: home zone or the latest scan's venue zone
    shelter_id: str | None = None  # the shelter the person last checked in at, while there
    located_at: float | None = None
    safety_code: str = "green"  # red while under an evacuation order and not yet at a shelter
    order_id: str | None = None  # the evacuation order that turned the safety code red
    seen_at: float | None = None
    recent_scans: list[str] = field(default_factory=list)  # the last scan ids: a scan sent twice counts once


RECENT_SCANS = 16


def seen_scan(person: Person, scan_id: str) -> tuple[Person, bool]:
    """The person with the scan noted, and whether it had been seen before (a venue's resend)."""
    if scan_id in person.recent_scans:
        return person, True
    return replace(person, recent_scans=[*person.recent_scans[-(RECENT_SCANS - 1):], scan_id]), False


def step_status(person: Person, st: PersonStatus) -> Person:
    """A colour change applies unless an older one arrives after a newer one."""
    person = replace(person, seen_at=st.at if person.seen_at is None else max(st.at, person.seen_at))
    if person.colour_at is not None and st.at < person.colour_at:
        return person
    return replace(person, colour=st.colour, colour_at=st.at)


def move(person: Person, token: str, zone_id: str, shelter_id: str | None, at: float) -> tuple[Person, list[Whereabouts]]:
    """The person's last known location moving to `zone_id` (at `shelter_id`, if a shelter): the
    zone left and the zone arrived in each hear of it. Older news of a location changes nothing."""
    if person.located_at is not None and at < person.located_at:
        return person, []
    moved = replace(person, zone_id=zone_id, shelter_id=shelter_id, located_at=at)
    if (person.zone_id, person.shelter_id) == (zone_id, shelter_id):
        return moved, []
    out = [Whereabouts(person.zone_id, token, False, at, shelter_id)] if person.zone_id else []
    return moved, [*out, Whereabouts(zone_id, token, True, at, shelter_id)]


def venue_notice(scan: PersonScan, colour: Colour, venue: Venue) -> Notice | None:
    """What a venue is told about a yellow or red code: deny entry, or check it. A shelter checks
    but never turns anyone away from safety."""
    if colour == "green":
        return None
    kind: NoticeKind = "deny_entry" if colour == "red" and venue.kind != "shelter" else "check_entry"
    action = {"deny_entry": ("请劝阻其进入并引导就医或隔离。", "Do not admit; direct the person to testing or isolation."),
              "check_entry": ("请核验并做好防护登记。", "Check the person and record the entry with care.")}[kind]
    zh_colour = {"yellow": "黄码", "red": "红码"}[colour]
    return Notice(f"{scan.scan_id}.venue", venue.venue_id, "venue", kind, scan.at, venue.zone_id,
                  [("zh-CN", f"扫码结果为{zh_colour}。{action[0]}"), ("en-US", f"The scanned code is {colour}. {action[1]}")],
                  scan_id=scan.scan_id)


def checked_in_notice(person: Person, token: str, shelter: Venue, at: float) -> Notice:
    return Notice(f"{person.order_id}.{token}.checked_in", token, "person", "checked_in", at, shelter.zone_id,
                  [("zh-CN", f"您已在{shelter.name}登记，安全码恢复为绿码。"),
                   ("en-US", f"You have checked in at {shelter.name}; your safety code is green again.")],
                  safety_code="green", shelter_id=shelter.venue_id, order_id=person.order_id)


def expired(person: Person, now: float, s: Settings) -> bool:
    """A person's state is no longer needed: green on both codes and unseen for `person_ttl_s`."""
    return (person.colour == "green" and person.safety_code == "green" and person.seen_at is not None
            and person.seen_at < now - s.person_ttl_s)


@dataclass(frozen=True, slots=True)
class ZoneHealth:
    """Hysteresis state of one zone's health-risk alert."""

    severity: Severity | None = None  # Moderate or Severe, while alerting
    risky_since: float | None = None  # at risk since (event time), while not alerting
    calm_since: float | None = None  # calm since, while alerting
    incident: Incident | None = None


def zone_risk(scans: int, yellow: int, red: int, s: Settings) -> Severity | None:
    """The severity a window's scans call for: enough yellow and red codes, and a large enough
    share of all scans, make a risk; red codes alone reaching the count make it severe."""
    risky = yellow + red
    if risky < s.health.risk_scans or risky < s.health.risk_share * scans:
        return None
    return "Severe" if red >= s.health.risk_scans else "Moderate"


def step_zone_health(
    watch: ZoneHealth, counts: list[int], window_end: float, zone: Zone, s: Settings
) -> tuple[ZoneHealth, Alert | None]:
    """Advance a zone's health alert by one window: raise once at risk for `raise_s` of event
    time, escalate at once, clear once calm for `clear_s`."""
    scans, yellow, red = counts
    severity = zone_risk(scans, yellow, red, s)
    window_start = window_end - s.health.window_s
    if watch.severity is None:
        since = held_since(watch.risky_since, severity is not None, window_start)
        if since is None or window_end - since < s.health.raise_s:
            return replace(watch, risky_since=since), None
        incident = Incident(cap_id(f"health.{zone.zone_id}.{int(window_end)}"))
        return _health_message(ZoneHealth(severity, incident=incident), "Alert", counts, window_end, zone, s)
    calm_since = held_since(watch.calm_since, severity is None, window_start)
    if calm_since is not None and window_end - calm_since >= s.health.clear_s:
        _, alert = _health_message(watch, "Cancel", counts, window_end, zone, s)
        return ZoneHealth(), alert
    if severity == "Severe" and watch.severity == "Moderate":
        return _health_message(replace(watch, severity=severity, calm_since=None), "Update", counts, window_end, zone, s)
    return replace(watch, calm_since=calm_since), None


def _health_message(
    watch: ZoneHealth, msg_type: MsgType, counts: list[int], at: float, zone: Zone, s: Settings
) -> tuple[ZoneHealth, Alert]:
    scans, yellow, red = counts
    minutes = s.health.window_s / 60
    cleared = msg_type == "Cancel"
    if cleared:
        texts = {"zh-CN": (f"{zone.name}健康码风险解除", f"{zone.name}黄码、红码扫码已回落。", "无需采取额外措施。"),
                 "en-US": (f"Health-code risk over in {zone.name}", f"Yellow and red codes scanned in {zone.name} are back down.",
                           "No further action needed.")}
    else:
        texts = {"zh-CN": (f"{zone.name}健康码风险", f"{zone.name}在{minutes:g}分钟内扫码{scans}次，"
                           f"黄码{yellow}次、红码{red}次。", "场所请严格查验健康码；居民请减少前往该区域。"),
                 "en-US": (f"Health-code risk in {zone.name}", f"{scans} scans in {zone.name} in {minutes:g} "
                           f"minutes: {yellow} yellow and {red} red codes.",
                           "Venues: check every code. Residents: avoid non-essential visits to the area.")}
    info = bilingual(texts, "Health", "Health-code risk", "AllClear" if cleared else "Monitor",
                     "Past" if cleared else "Expected", watch.severity or "Minor", "Observed",
                     [("zone_id", zone.zone_id), ("scans", str(scans)), ("yellow", str(yellow)), ("red", str(red))],
                     [zone_area(zone)])
    assert watch.incident is not None  # opened with its first message
    incident, alert = watch.incident.message(s.cap, msg_type, at, info)
    return replace(watch, incident=incident), alert


# ---------------------------------------------------------------------------------------------
# Stages


class HealthIntakeStage(Stage):
    """Scans and status changes as read (identifiers already tokenised), re-keyed by person so
    that everything about one person meets on one partition. Keeps no state of its own."""

    name = "health_intake"
    source = "health_scans"
    contract = HealthCodeScan
    alongside = {"health_status": HealthCodeStatusChange}  # a second stream of events

    def knows(self, e: HealthCodeScan | HealthCodeStatusChange) -> bool:
        if isinstance(e, HealthCodeScan):
            return e.venue_id in self.reference.city.venues
        return e.zone_id is None or e.zone_id in self.reference.city.zones

    def on_event(self, e: HealthCodeScan | HealthCodeStatusChange, source: Source, effects: Effects) -> None:
        if isinstance(e, HealthCodeStatusChange):
            if e.zone_id is not None and e.zone_id not in self.reference.city.zones:
                raise Rejected(f"unknown zone_id {e.zone_id!r}: not in the zones reference", "unknown_reference")
            effects.send(topics.person_status, e.person_id, PersonStatus(e.person_id, e.colour, e.event_time, e.zone_id))
            return
        venue = self.reference.city.venues.get(e.venue_id)
        if venue is None:
            raise Rejected(f"unknown venue_id {e.venue_id!r}: not in the venues reference", "unknown_reference")
        effects.send(topics.person_scans, e.person_id,
                     PersonScan(e.scan_id, e.person_id, venue.venue_id, venue.zone_id, venue.kind == "shelter", e.event_time))


class PeopleStage(Stage):
    """Per person token: health colour, last known zone and safety code."""

    name = "people"
    source = "person_scans"
    contract = PersonScan
    alongside = {"person_status": PersonStatus, "notices": Notice}
    people = Table(Person)  # by person token
    swept_at = Value(float, -math.inf)  # the partition's clock when expired people were last forgotten

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.clock = max((p.seen_at for p in self.people.values() if p.seen_at is not None), default=float("-inf"))

    def on_event(self, e: PersonScan | PersonStatus | Notice, source: Source, effects: Effects) -> None:
        if isinstance(e, Notice):
            self.on_notice(e)
            return
        if e.at > self.clock:
            self.clock = e.at
            # Forgetting people is swept once an hour of event time, not on every event.
            if self.clock - self.swept_at >= 3600:
                self.sweep(effects)
        token = e.person_token
        person = self.people.get(token, Person())
        if isinstance(e, PersonStatus):
            person = step_status(person, e)
            if e.zone_id is not None:
                person, moves = move(person, token, e.zone_id, None, e.at)
                self.send_moves(moves, effects)
            self.people[token] = person
            return
        person, again = seen_scan(person, e.scan_id)
        if again:
            return
        venue = self.reference.city.venues.get(e.venue_id) or Venue(e.venue_id, e.venue_id, e.zone_id)
        notice = venue_notice(e, person.colour, venue)
        if notice is not None:
            send_notice(notice, effects)
        effects.send(topics.zone_scans, e.zone_id, ZoneScan(e.zone_id, e.scan_id, person.colour, e.at))
        seen_at = e.at if person.seen_at is None else max(e.at, person.seen_at)
        person, moves = move(replace(person, seen_at=seen_at), token, e.zone_id,
                             e.venue_id if e.shelter else None, e.at)
        self.send_moves(moves, effects)
        if e.shelter and person.safety_code == "red":
            send_notice(checked_in_notice(person, token, venue, e.at), effects)
            person = replace(person, safety_code="green")
        self.people[token] = person

    def on_notice(self, n: Notice) -> None:
        """Evacuation notices, read back as a table, set the person's safety code."""
        if n.to_kind != "person" or n.kind not in ("evacuate", "order_lifted"):
            return
        person = self.people.get(n.to, Person())
        if n.kind == "evacuate" and person.order_id != n.order_id:
            self.people[n.to] = replace(person, safety_code="red", order_id=n.order_id)
        elif n.kind == "order_lifted" and person.order_id is not None and person.order_id == n.order_id:
            self.people[n.to] = replace(person, safety_code="green", order_id=None)

    def send_moves(self, moves: list[Whereabouts], effects: Effects) -> None:
        for w in moves:
            effects.send(topics.whereabouts, w.zone_id, w)

    def sweep(self, effects: Effects) -> None:
        """Forget the people whose state has expired at the partition's clock."""
        for token in [t for t, p in self.people.items() if expired(p, self.clock, self.settings)]:
            person = self.people.pop(token)
            if person.zone_id is not None:
                self.send_moves([Whereabouts(person.zone_id, token, False, self.clock)], effects)
        self.swept_at = self.clock


COLOURS = ("green", "yellow", "red")


def count_scan(acc: list[int] | None, scan: ZoneScan) -> list[int]:
    """Scans in all, yellow and red."""
    acc = acc or [0, 0, 0]
    acc[0] += 1
    if scan.colour != "green":
        acc[COLOURS.index(scan.colour)] += 1
    return acc


class ZoneHealthStage(WindowedStage):
    """Per zone and window: scans by colour, and the zone's health-risk alert."""

    name = "zone_health"
    source = "zone_scans"
    contract = ZoneScan
    watch = Table(ZoneHealth)
    zones = Table(dict, restored=False)  # the live view of each zone's last window
    sensor_clocks = False  # scans come from every person partition, whose progress can run apart

    @classmethod
    def window_of(cls, settings: Settings) -> tuple[float, float]:
        return settings.health.window_s, settings.health.grace_s

    def gauges(self) -> metrics.Gauges:
        incidents = sum(1 for w in self.watch.values() if w.incident)
        return metrics.merge(super().gauges(), metrics.gauge("citybrain_active_incidents", incidents, "Health"))

    def keys(self, scan: ZoneScan) -> tuple[float, tuple[str, ...], None]:
        return scan.at, (scan.zone_id,), None

    accumulate = staticmethod(count_scan)

    def on_close(self, closed: list[tuple[str, float, Any]], effects: Effects) -> None:
        for zone_id, start, counts in closed:
            zone = self.reference.city.zones.get(zone_id) or Zone(zone_id, zone_id, [])
            end = start + self.settings.health.window_s
            watch, alert = step_zone_health(self.watch.get(zone_id, ZoneHealth()), counts, end, zone, self.settings)
            self.watch[zone_id] = watch
            if alert is not None:
                send_alert(alert, effects)
            scans, yellow, red = counts
            self.zones[zone_id] = {
                "zone_id": zone_id, "window_start": iso(start), "window_end": iso(end), "scans": scans,
                "yellow": yellow, "red": red, "risk": zone_risk(scans, yellow, red, self.settings), "alert": watch.severity,
            }


runtime.stage(HealthIntakeStage)
runtime.stage(PeopleStage)
runtime.stage(ZoneHealthStage)
