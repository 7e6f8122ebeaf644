"""The city's live state over HTTP as NGSI-LD entities shaped by the FIWARE Smart Data Models,
served by every worker from Redis (any worker answers for any entity):

  GET /ngsi-ld/v1/entities?type=FloodMonitoring&q=floodLevelStatus=="closure"
        &georel=near;maxDistance==2000&geometry=Point&coordinates=[113.65,34.75]&limit=20&count=true
  GET /ngsi-ld/v1/entities/urn:ngsi-ld:FloodMonitoring:P1
  GET /ngsi-ld/v1/types

  FloodMonitoring      a monitored point: its depth (m), level, the lines, its sensor's state
  TrafficFlowObserved  a road segment's latest window: vehicles, speed, occupancy, congestion
  OffStreetParking     a car park: spots, occupancy, DATEX II status
  WeatherAlert         a zone under a rainstorm signal: its colour as a severity, its rain
  Alert                a standing public CAP alert (agents/cap_feed.py): rainstorm signals,
                       waterlogging, closures, evacuations, lots filling up; and a zone under an
                       evacuation order, with its people counted

People are never listed: no entity carries a person or a plate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Point, mapping, shape
from shapely.geometry.base import BaseGeometry

from agents.cap_feed import standing_alerts
from agents.evacuation import EvacuationStage
from agents.flood import LEVELS
from agents.parking import ParkingStage
from agents.rain import ZoneRainStage
from agents.traffic import TrafficStage
from agents.waterlogging import WaterloggingStage
from schemas.cap import Alert, zone_area
from schemas.contract import iso, parse_time
from schemas.records import SegmentWindow
from schemas.reference import CityMap, Lot, Segment, WaterloggingPoint, Zone, distance_m
from streams import runtime
from streams.app import app
from streams.settings import Settings, settings

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
MODELS_CONTEXT = "https://smartdatamodels.org/context.jsonld"  # the attributes' terms
CONTEXT = [MODELS_CONTEXT, CORE_CONTEXT]
LINK = f'<{MODELS_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
LIMIT, LIMIT_MAX = 20, 1000

Entity = dict[str, Any]


class BadRequest(ValueError):
    """A query the API cannot answer as asked: 400 with the reason."""


# ---------------------------------------------------------------------------------------------
# Entities (pure)


def urn(kind: str, key: str) -> str:
    return f"urn:ngsi-ld:{kind}:{key}"


def prop(value: Any, observed_at: str | None = None, unit: str | None = None) -> dict:
    p = {"type": "Property", "value": value}
    if observed_at:
        p["observedAt"] = observed_at
    if unit:
        p["unitCode"] = unit  # UN/CEFACT common codes: MTR metres, KMH km/h, E50 vehicles per hour
    return p


def located(lat: float, lon: float) -> dict:
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


def flood_monitoring(point: WaterloggingPoint, view: dict | None, s: Settings) -> Entity:
    """A monitored point as FloodMonitoring: depths in metres above the road's lowest point; the
    alert level is the watch line and the danger level the road closure line."""
    entity = {"id": urn("FloodMonitoring", point.point_id), "type": "FloodMonitoring", "name": prop(point.name),
              "stationID": prop(point.point_id), "areaServed": prop(point.zone_id), "location": located(point.lat, point.lon),
              "referenceLevel": prop(0.0, unit="MTR"), "alertLevel": prop(s.waterlogging.levels_cm[0] / 100, unit="MTR"),
              "dangerLevel": prop(s.waterlogging.levels_cm[LEVELS.index("closure")] / 100, unit="MTR")}
    if view is not None and view.get("depth_cm") is not None:
        at = view.get("updated")
        health = view.get("sensor_health", "ok")  # a sensor at fault says nothing of the water: sensorFaulty...
        status = (view.get("level") or "normal") if health == "ok" else f"sensor{health.title()}"
        entity |= {"currentLevel": prop(round(view["depth_cm"] / 100, 3), at, "MTR"), "observationDateTime": prop(at),
                   "floodLevelStatus": prop(status, at)}
    return entity


def traffic_flow(segment: Segment, window: SegmentWindow | None) -> Entity:
    """A road segment's latest window as TrafficFlowObserved (GB/T 33171 indicators besides)."""
    entity = {"id": urn("TrafficFlowObserved", segment.segment_id), "type": "TrafficFlowObserved",
              "name": prop(segment.name), "areaServed": prop(segment.zone_id),
              "refRoadSegment": {"type": "Relationship", "object": urn("RoadSegment", segment.segment_id)}}
    if window is not None:
        start, end = iso(window.window_start), iso(window.window_end)
        entity |= {"dateObserved": prop(f"{start}/{end}"), "dateObservedFrom": prop(start), "dateObservedTo": prop(end),
                   "averageVehicleSpeed": prop(window.speed_kmh, end, "KMH"),
                   "congested": prop(window.level in ("moderate", "severe"), end)}
        # What the feed did not measure is left out: a probe feed's sample is not the traffic.
        if window.flow_vph is not None:
            entity["intensity"] = prop(window.vehicles, end)
        if window.occupancy is not None:
            entity["occupancy"] = prop(window.occupancy, end)
    return entity


def off_street_parking(lot: Lot, view: dict | None) -> Entity:
    """A car park as OffStreetParking, its status in DATEX II terms."""
    entity = {"id": urn("OffStreetParking", lot.lot_id), "type": "OffStreetParking", "name": prop(lot.name),
              "areaServed": prop(lot.zone_id), "totalSpotNumber": prop(lot.capacity),
              "category": prop(["underground" if lot.underground else "surface"])}
    if lot.placed:
        entity["location"] = located(lot.lat, lot.lon)
    if view is not None:
        at = view.get("updated")
        entity |= {n: prop(view[n], at) for n in ("availableSpotNumber", "occupiedSpotNumber", "occupancy")}
        entity |= {"status": prop([view["status"]], at), "observationDateTime": prop(at)}
    return entity


ALERT_CATEGORY = {"Met": "weather", "Geo": "naturalDisaster", "Safety": "naturalDisaster", "Transport": "traffic",
                  "Health": "health", "Env": "environment"}
ALERT_SEVERITY = {"Extreme": "critical", "Severe": "high", "Moderate": "medium", "Minor": "low", "Unknown": "informational"}
ALERT_SUBCATEGORY = {"Rainstorm": "rainfall", "Road waterlogging": "flood", "Road waterlogging (camera)": "flood",
                     "Reported waterlogging": "flood", "Road waterlogging forecast": "floodRisk",
                     "Road congestion": "trafficJam", "Road closure": "roadClosed", "Flood evacuation": "flood",
                     "Underground car park closure": "floodRisk"}  # by the events the agents raise


def alert_entity(alert: Alert, language: str = "en-US") -> Entity:
    """A standing CAP message as an Alert: what, how severe, from when to when, and where."""
    info = alert.info_in(language)
    entity = {"id": urn("Alert", alert.identifier), "type": "Alert", "name": prop(info.headline),
              "description": prop(info.description), "category": prop(ALERT_CATEGORY.get(info.category, "security")),
              "severity": prop(ALERT_SEVERITY[info.severity]), "dateIssued": prop(iso(parse_time(alert.sent))),
              "validFrom": prop(iso(parse_time(info.onset or alert.sent))),
              "data": prop({"cap_identifier": alert.identifier, "msg_type": alert.msg_type, "event": info.event,
                            "urgency": info.urgency, "certainty": info.certainty, **dict(info.parameters)})}
    if info.event in ALERT_SUBCATEGORY:
        entity["subCategory"] = prop(ALERT_SUBCATEGORY[info.event])
    if info.expires:
        entity["validTo"] = prop(iso(parse_time(info.expires)))
    if zone := alert.parameter("zone_id"):
        entity["areaServed"] = prop(zone)
    if shapes := info.areas[0].shapes() if info.areas else []:  # its polygon, or its circle's centre
        entity["location"] = geo_property(shapes[0][0])
    return entity


def geo_property(geometry: BaseGeometry) -> dict:
    return {"type": "GeoProperty", "value": json.loads(json.dumps(mapping(geometry)))}  # GeoJSON's lists


def zone_located(entity: Entity, zone: Zone) -> Entity:
    """An entity of a zone, placed on the zone's polygon (its pieces, for a zone in several)."""
    polygons = [g for g, _ in zone_area(zone).shapes()]
    if polygons:
        entity["location"] = geo_property(polygons[0] if len(polygons) == 1 else MultiPolygon(polygons))
    return entity


RAINSTORM_SEVERITY = {"blue": "low", "yellow": "medium", "orange": "high", "red": "critical"}


def rainstorm_alert(zone: Zone, view: dict) -> Entity | None:
    """A zone under a rainstorm signal as a WeatherAlert: the signal's colour as its severity, the
    zone's rain totals and gauges in its data; None under no signal."""
    signal = view.get("signal")
    if not signal:
        return None
    data = {k: v for k, v in view.items() if k.startswith("rain_") or k.startswith("gauges_")}
    return zone_located({"id": urn("WeatherAlert", f"rainstorm:{zone.zone_id}"), "type": "WeatherAlert",
                         "name": prop(f"Rainstorm {signal} signal: {zone.name}"), "category": prop("weather"),
                         "subCategory": prop("rainfall"), "severity": prop(RAINSTORM_SEVERITY[signal], view.get("as_of")),
                         "areaServed": prop(zone.zone_id), "data": prop({"signal": signal, "as_of": view.get("as_of"), **data})},
                        zone)


def evacuation_alert(zone: Zone, view: dict) -> Entity | None:
    """A zone under an evacuation order as an Alert: the order, the shelter it sends people to,
    and its people counted (never listed); None under no order."""
    order = view.get("evacuation_order")
    if not order:
        return None
    return zone_located({"id": urn("Alert", f"evacuation:{zone.zone_id}"), "type": "Alert",
                         "name": prop(f"Evacuation: {zone.name}"), "category": prop("naturalDisaster"),
                         "subCategory": prop("evacuation"), "severity": prop("critical"), "areaServed": prop(zone.zone_id),
                         "data": prop({"order_id": order, "shelter_id": view.get("shelter_id"),
                                       "people_in_zone": view.get("people", 0),
                                       "people_told_to_evacuate": view.get("told_to_evacuate", 0)})},
                        zone)


# ---------------------------------------------------------------------------------------------
# Queries (pure): the NGSI-LD query language's comparisons, and near / within


QUERY_TERM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|>|<)\s*(.+?)\s*$")


def query_filter(q: str | None) -> Callable[[Entity], bool]:
    """`attr==value;attr>=value` (every term must hold): numbers, "strings", true and false."""
    if not q:
        return lambda e: True
    terms = []
    for term in q.split(";"):
        m = QUERY_TERM.match(term)
        if not m:
            raise BadRequest(f"q: cannot read the term {term!r} (attribute, comparison, value)")
        name, op, raw = m.groups()
        try:
            value = json.loads(raw)
        except ValueError:
            raise BadRequest(f"q: {raw!r} is not a number, a quoted string, true or false") from None
        terms.append((name, op, value))

    def holds(entity: Entity) -> bool:
        return all(_compare(_value_of(entity, name), op, value) for name, op, value in terms)

    return holds


def _value_of(entity: Entity, name: str) -> Any:
    attribute = entity.get(name)
    return attribute.get("value", attribute.get("object")) if isinstance(attribute, dict) else None


def _compare(have: Any, op: str, want: Any) -> bool:
    if have is None:
        return op == "!="
    if isinstance(have, list):  # a list matches when one of its members does (a status list)
        return any(_compare(h, op, want) for h in have) if op != "!=" else all(_compare(h, op, want) for h in have)
    if op in ("==", "!="):
        return (have == want) == (op == "==")
    if isinstance(have, bool) or isinstance(want, bool) or type(have) is not type(want) and not (
            isinstance(have, (int, float)) and isinstance(want, (int, float))):
        return False
    return {">": have > want, "<": have < want, ">=": have >= want, "<=": have <= want}[op]


GEOMETRIES = ("Point", "LineString", "Polygon", "MultiPolygon")


def geo_filter(georel: str | None, geometry: str | None, coordinates: str | None) -> Callable[[Entity], bool]:
    """`near;maxDistance==m` (or minDistance) of a Point, or `within` a Polygon; an entity with
    no location matches no geo-query."""
    if not georel:
        return lambda e: True
    if not geometry or not coordinates:
        raise BadRequest("a geo-query needs georel, geometry and coordinates")
    if geometry not in GEOMETRIES:
        raise BadRequest(f"geometry: {geometry!r} is not one of {', '.join(GEOMETRIES)}")
    try:
        there = shape({"type": geometry, "coordinates": json.loads(coordinates)})
        if there.is_empty or not there.is_valid:
            raise BadRequest(f"coordinates: an empty or invalid {geometry}")
    except (ValueError, TypeError, AttributeError, IndexError, ShapelyError) as exc:
        raise BadRequest(f"coordinates: not a GeoJSON {geometry}: {exc}") from None
    relation, *modifiers = georel.split(";")
    if relation == "near":
        if not isinstance(there, Point) or len(modifiers) != 1:
            raise BadRequest("near: a Point and one of maxDistance==m or minDistance==m")
        bound, _, metres = modifiers[0].partition("==")
        if bound not in ("maxDistance", "minDistance"):
            raise BadRequest(f"near: {bound!r} is neither maxDistance nor minDistance")
        try:
            limit = float(metres)
        except ValueError:
            raise BadRequest(f"near: {bound}=={metres!r} is not a distance in metres") from None

        def near(entity: Entity) -> bool:
            here = _location(entity)
            if here is None:
                return False
            centre = here.centroid
            d = distance_m(there.y, there.x, centre.y, centre.x)
            return d <= limit if bound == "maxDistance" else d >= limit

        return near
    if relation in ("within", "intersects", "disjoint"):
        test = {"within": lambda g: g.within(there), "intersects": lambda g: g.intersects(there),
                "disjoint": lambda g: g.disjoint(there)}[relation]
        return lambda entity: (here := _location(entity)) is not None and test(here)
    raise BadRequest(f"georel: {relation!r} is not near, within, intersects or disjoint")


def _location(entity: Entity) -> Any:
    location = entity.get("location")
    return shape(location["value"]) if location else None


def select(entities: Iterable[Entity], ids: set[str] | None, match: Callable[[Entity], bool],
           geo: Callable[[Entity], bool]) -> list[Entity]:
    """The entities that match, in id order (pages are stable)."""
    return sorted((e for e in entities if (ids is None or e["id"] in ids) and match(e) and geo(e)), key=lambda e: e["id"])


# ---------------------------------------------------------------------------------------------
# Reading the city's state


async def entities_of(kind: str, city: CityMap, s: Settings) -> list[Entity]:
    """Every entity of one type, from the reference map and the stages' live views in Redis."""
    if kind == "FloodMonitoring":
        views = await runtime.read_table(WaterloggingStage, "points")
        return [flood_monitoring(p, views.get(p.point_id), s) for p in city.points.values()]
    if kind == "TrafficFlowObserved":
        windows = await runtime.read_table(TrafficStage, "segments")
        return [traffic_flow(seg, windows.get(seg.segment_id)) for seg in city.segments.values()]
    if kind == "OffStreetParking":
        views = await runtime.read_table(ParkingStage, "lots")
        return [off_street_parking(lot, views.get(lot.lot_id)) for lot in city.lots.values()]
    if kind == "WeatherAlert":
        views = await runtime.read_table(ZoneRainStage, "zones")
        return [e for z in city.zones.values() if (e := rainstorm_alert(z, views.get(z.zone_id, {})))]
    if kind == "Alert":
        views = await runtime.read_table(EvacuationStage, "zones")
        return [*(alert_entity(a) for a in await standing_alerts() if a.msg_type != "Cancel"),  # ended: not active
                *(e for z in city.zones.values() if (e := evacuation_alert(z, views.get(z.zone_id, {}))))]
    return []


TYPES = ("Alert", "FloodMonitoring", "OffStreetParking", "TrafficFlowObserved", "WeatherAlert")


def _type_of(entity_id: str) -> str:
    parts = entity_id.split(":")
    if len(parts) < 4 or parts[:2] != ["urn", "ngsi-ld"]:
        raise BadRequest(f"{entity_id!r} is not an NGSI-LD entity id (urn:ngsi-ld:<type>:<id>)")
    return parts[2]


# ---------------------------------------------------------------------------------------------
# Pages


def _whole(query: dict, name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        raise BadRequest(f"{name}: {query[name]!r} is not a whole number") from None


def _problem(web: Any, status: int, kind: str, title: str, detail: str) -> Any:
    body = {"type": ERRORS + kind, "title": title, "detail": detail}
    return web.bytes(json.dumps(body).encode(), status=status, content_type="application/json")


def _answer(web: Any, request: Any, body: Any, headers: dict | None = None) -> Any:
    """JSON-LD with the @context inside when asked for it, JSON with the context linked otherwise."""
    ld = "application/ld+json" in request.headers.get("Accept", "")
    if ld:
        body = [{**e, "@context": CONTEXT} for e in body] if isinstance(body, list) else {**body, "@context": CONTEXT}
    kind = "application/ld+json" if ld else "application/json"
    return web.bytes(json.dumps(body, ensure_ascii=False).encode(), content_type=kind,
                     headers={**(headers or {}), **({} if ld else {"Link": LINK})})


@app.page("/ngsi-ld/v1/entities")
async def serve_entities(web, request):  # noqa: ANN001
    """Entities by type, id, q and geo-query, a page at a time (`limit`, `offset`, `count=true`)."""
    query = dict(request.query)
    if "geoQ" in query:  # the three geo-query parameters in one, as some clients send them
        query |= {k: v[0] for k, v in parse_qs(query.pop("geoQ")).items()}
    try:
        kinds = list(dict.fromkeys(query["type"].split(","))) if query.get("type") else list(TYPES)
        ids = set(query["id"].split(",")) if query.get("id") else None
        if ids is not None and not query.get("type"):
            kinds = sorted({_type_of(i) for i in ids})
        limit, offset = _whole(query, "limit", LIMIT), _whole(query, "offset", 0)
        if not 0 <= limit <= LIMIT_MAX or offset < 0:
            raise BadRequest(f"limit is 0 to {LIMIT_MAX}, offset 0 or more")
        geo = geo_filter(query.get("georel"), query.get("geometry"), query.get("coordinates"))
        match = query_filter(query.get("q"))
    except BadRequest as exc:
        return _problem(web, 400, "BadRequestData", "Bad request", str(exc))
    city, s = await runtime.current_city(), settings()
    found = select([e for kind in kinds for e in await entities_of(kind, city, s)], ids, match, geo)
    headers = {"NGSILD-Results-Count": str(len(found))} if query.get("count") == "true" else {}
    return _answer(web, request, found[offset : offset + limit], headers)


@app.page("/ngsi-ld/v1/entities/{entity_id}")
async def serve_entity(web, request, entity_id: str):  # noqa: ANN001
    try:
        kind = _type_of(entity_id)
    except BadRequest as exc:
        return _problem(web, 400, "BadRequestData", "Bad request", str(exc))
    found = [e for e in await entities_of(kind, await runtime.current_city(), settings()) if e["id"] == entity_id]
    if not found:
        return _problem(web, 404, "ResourceNotFound", "Not found", f"no entity {entity_id}")
    return _answer(web, request, found[0])


@app.page("/ngsi-ld/v1/types")
async def serve_types(web, request):  # noqa: ANN001
    """The entity types the city serves."""
    return _answer(web, request, {"id": "urn:ngsi-ld:EntityTypeList:citybrain", "type": "EntityTypeList",
                                  "typeList": list(TYPES)})

