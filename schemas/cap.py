"""OASIS CAP 1.2: the one alert model of every domain, as JSON and as XML with the same fields.

The JSON record is the CAP alert with snake_case names; `to_xml` renders it in the element
order the CAP 1.2 XSD prescribes. Times are CAP times (`2026-07-20T08:03:00-00:00`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast

from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from schemas.contract import contract, text
from schemas.reference import Segment, Zone, distance_m

if TYPE_CHECKING:
    from streams.settings import Cap

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

MsgType = Literal["Alert", "Update", "Cancel"]
Status = Literal["Actual", "Exercise", "System", "Test", "Draft"]
Category = Literal["Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra", "CBRNE", "Other"]
ResponseType = Literal["Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear", "None"]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]

SEVERITY_RANK: dict[str | None, int] = {None: -1, "Unknown": 0, "Minor": 1, "Moderate": 2, "Severe": 3, "Extreme": 4}

# Chinese warning colours onto CAP severity.
COLOUR_SEVERITY: dict[str, Severity] = {"blue": "Minor", "yellow": "Moderate", "orange": "Severe", "red": "Extreme"}

_NOT_IN_IDS = re.compile(r"[\s,<&]")


def cap_time(t: float) -> str:
    """Epoch seconds as a CAP time: whole seconds, numeric offset, UTC written -00:00."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%S-00:00")


def cap_id(text: str) -> str:
    """An identifier or sender with the characters CAP forbids replaced."""
    return _NOT_IN_IDS.sub("_", text)


def polygon(ring: list[tuple[float, float]] | tuple[tuple[float, float], ...]) -> str:
    """A closed ring of (lat, lon) as a CAP polygon."""
    points = list(ring)
    if points[0] != points[-1]:
        points.append(points[0])
    return " ".join(f"{lat},{lon}" for lat, lon in points)


@contract
class Area:
    area_desc: str
    polygons: list[str] = field(default_factory=list)
    circles: list[str] = field(default_factory=list)  # "lat,lon radius_km"

    def shapes(self) -> list[tuple[BaseGeometry, float]]:
        """The area as geometries in (lon, lat), each with the metres around it that it covers:
        a polygon none, a circle (its centre) its radius."""
        out: list[tuple[BaseGeometry, float]] = [
            (Polygon([(float(lon), float(lat)) for lat, lon in (p.split(",") for p in ring.split())]), 0.0)
            for ring in self.polygons]
        for circle in self.circles:
            centre, radius_km = circle.split()
            lat, lon = centre.split(",")
            out.append((Point(float(lon), float(lat)), float(radius_km) * 1000))
        return out


def metres_between(a: BaseGeometry, b: BaseGeometry) -> float:
    """Metres between two geometries in (lon, lat) along the earth; none where they meet."""
    if a.intersects(b):
        return 0.0
    p, q = nearest_points(a, b)
    return distance_m(p.y, p.x, q.y, q.x)


def zone_area(zone: Zone) -> Area:
    """A zone as a CAP area: its name and its polygons (one per piece of a zone in several)."""
    return Area(zone.name, [polygon(ring) for ring in zone.rings])


def road_area(segment: Segment, zone: Zone | None) -> Area:
    """A road segment as a CAP area: named with its zone, drawn as the zone when it has a polygon."""
    return Area(f"{segment.name}, {zone.name if zone else segment.zone_id}",
                zone_area(zone).polygons if zone else [])


def circle_area(name: str, lat: float, lon: float, radius_km: float) -> Area:
    """A place as a CAP area: a circle around it."""
    return Area(name, circles=[f"{lat},{lon} {radius_km:g}"])


@contract
class Info:
    language: str
    category: Category
    event: str
    response_type: ResponseType
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    headline: str
    description: str = text(8_000)
    instruction: str = text(8_000)
    parameters: list[tuple[str, str]] = field(default_factory=list)  # (valueName, value)
    areas: list[Area] = field(default_factory=list)
    event_codes: list[tuple[str, str]] = field(default_factory=list)  # (valueName, value)
    onset: str | None = None  # CAP time the event is expected to begin (a forecast's crossing)
    expires: str | None = None  # CAP time the message no longer stands
    sender_name: str | None = None
    web: str | None = None
    contact: str | None = None


@contract
class Alert:
    """One CAP message of an incident: Alert first, then Updates, then the Cancel.

    `identifier` is deterministic for the incident episode and its step, so a replay produces
    the same messages instead of a second incident; `references` chains the lifecycle.
    """

    identifier: str
    sender: str
    sent: str  # CAP time
    status: Status
    msg_type: MsgType
    scope: Literal["Public", "Restricted", "Private"]
    references: str | None  # "sender,identifier,sent" of the message this one follows
    incidents: str
    info: list[Info]
    restriction: str | None = None  # who may see a Restricted message

    def info_in(self, language: str | None) -> Info:
        """The info block in `language`, or the first where there is none in it."""
        return next((i for i in self.info if i.language == language), self.info[0])

    def parameter(self, name: str) -> str | None:
        for value_name, value in self.info[0].parameters:
            if value_name == name:
                return value
        return None


def reference_to(alert: Alert) -> str:
    """How a later message of the incident refers to this one."""
    return f"{alert.sender},{alert.identifier},{alert.sent}"


def to_xml(alert: Alert) -> str:
    """The alert as a CAP 1.2 XML document."""
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(f"{{{NAMESPACE}}}alert")

    def add(parent: ET.Element, tag: str, text: str | None) -> None:
        if text is not None:
            ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}").text = text

    def add_pair(parent: ET.Element, tag: str, name: str, value: str) -> None:
        pair = ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
        add(pair, "valueName", name)
        add(pair, "value", value)

    for tag, value in (("identifier", alert.identifier), ("sender", alert.sender), ("sent", alert.sent),
                       ("status", alert.status), ("msgType", alert.msg_type), ("scope", alert.scope),
                       ("restriction", alert.restriction), ("references", alert.references),
                       ("incidents", alert.incidents)):
        add(root, tag, value)
    for info in alert.info:
        el = ET.SubElement(root, f"{{{NAMESPACE}}}info")
        for tag, value in (("language", info.language), ("category", info.category), ("event", info.event),
                           ("responseType", info.response_type), ("urgency", info.urgency),
                           ("severity", info.severity), ("certainty", info.certainty)):
            add(el, tag, value)
        for name, value in info.event_codes:
            add_pair(el, "eventCode", name, value)
        for tag, value in (("onset", info.onset), ("expires", info.expires), ("senderName", info.sender_name),
                           ("headline", info.headline), ("description", info.description),
                           ("instruction", info.instruction), ("web", info.web), ("contact", info.contact)):
            add(el, tag, value)
        for name, value in info.parameters:
            add_pair(el, "parameter", name, value)
        for area in info.areas:
            a = ET.SubElement(el, f"{{{NAMESPACE}}}area")
            add(a, "areaDesc", area.area_desc)
            for ring in area.polygons:
                add(a, "polygon", ring)
            for circle in area.circles:
                add(a, "circle", circle)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


@contract
class Incident:
    """Where an incident's lifecycle stands: its id, next step and the last message's reference."""

    id: str
    step: int = 0
    last_reference: str | None = None

    def message_id(self, sender: str) -> str:
        """The deterministic identifier of the incident's next message."""
        return f"{sender}.{self.id}.{self.step}"

    def after(self, alert: Alert) -> Incident:
        """The incident once `alert` went out: the next message refers back to it."""
        return Incident(self.id, self.step + 1, reference_to(alert))

    def message(self, cap: Cap, msg_type: MsgType, at: float, info: list[Info], *, onset: float | None = None,
                operational: bool = False) -> tuple[Incident, Alert]:
        """The incident's next message, signed off as the city's settings say, and the incident
        once it went out. A Cancel ends the incident (`published`). An operational message (a
        sensor at fault) is for the operations room, not the public. `onset`: when the event is
        expected to begin, for a warning given before it."""
        starts = at if onset is None else max(at, onset)
        expires = at + cap.all_clear_expires_s if msg_type == "Cancel" else starts + cap.expires_s
        signed = [replace(i, event_codes=[(cap.event_code, event_code(i.event))],
                          onset=None if onset is None else cap_time(starts), expires=cap_time(expires),
                          sender_name=cap.sender_name, web=cap.web or None, contact=cap.contact or None)
                  for i in info]
        alert = Alert(self.message_id(cap.sender), cap.sender, cap_time(at), cast(Status, cap.status), msg_type,
                      "Restricted" if operational else "Public", self.last_reference, self.id, signed,
                      OPERATIONS if operational else None)
        return self.after(alert), alert


def step_of(identifier: str) -> int:
    """Which step of its incident a message is: the last part of its identifier (`Incident.message_id`)."""
    return int(identifier.rsplit(".", 1)[1])


OPERATIONS = "the city's operations staff"  # who sees an operational (Restricted) message


def event_code(event: str) -> str:
    """An event's name as the value of its eventCode: `Road waterlogging` -> `road-waterlogging`."""
    return "-".join(event.lower().split())


def published(alert: Alert) -> list[Alert]:
    """The messages that go out for one step of an incident. An incident ends as aggregators ask
    (Google Public Alerts, "Event changes or expiration"): an Update that says it ended (the all
    clear, as a rule) and expires soon, then a Cancel of it, so that a reader who missed the
    Update still drops the incident, and one who keeps expired messages sees why it ended."""
    if alert.msg_type != "Cancel":
        return [alert]
    all_clear = replace(alert, msg_type="Update")
    cancel = replace(alert, identifier=f"{alert.identifier}.cancel", references=reference_to(all_clear))
    return [all_clear, cancel]


def bilingual(
    texts: dict[str, tuple[str, str, str]], category: Category, event: str, response_type: ResponseType,
    urgency: Urgency, severity: Severity, certainty: Certainty, parameters: list[tuple[str, str]], areas: list[Area],
) -> list[Info]:
    """One info block per language from (headline, description, instruction) by language."""
    return [Info(language, category, event, response_type, urgency, severity, certainty, headline, description,
                 instruction, parameters, areas)
            for language, (headline, description, instruction) in texts.items()]
