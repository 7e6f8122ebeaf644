"""NGSI-LD entities: every attribute is one the Smart Data Models define for the entity's type,
with the NGSI type, JSON type, format and allowed values they publish (pysmartdatamodels' model
assets); the query language's comparisons and the geo-queries."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from agents.ngsi_ld import (
    BadRequest,
    alert_entity,
    evacuation_alert,
    flood_monitoring,
    geo_filter,
    off_street_parking,
    query_filter,
    rainstorm_alert,
    select,
    traffic_flow,
)
from schemas.cap import Incident, bilingual, circle_area, zone_area
from schemas.contract import parse_time
from schemas.records import SegmentWindow
from schemas.reference import Lot, Segment, WaterloggingPoint, Zone
from streams.settings import Settings

S = Settings()
T0 = 1_784_534_400.0
POINT = WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65, "underpass")
FAR = WaterloggingPoint("P2", "Nongye Rd dip", "Z2", None, 34.80, 113.70)
LOT = Lot("L1", "Jinshui underground", "Z1", 200, underground=True, lat=34.751, lon=113.651)
SEGMENT = Segment("S1", "Jingguang Rd", "Z1", "arterial", 1.2, 60.0, 3)
ZONE = Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)])


@cache
def smart_data_models() -> dict[str, dict[str, list[dict]]]:
    """model -> attribute -> its published definitions (a model may be in several subjects)."""
    assets = Path(importlib.util.find_spec("pysmartdatamodels").submodule_search_locations[0]) / "model-assets"
    models: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for d in json.load(gzip.open(assets / "smartdatamodels.json.gz")):
        models[d["dataModel"]][d["property"]].append(d)
    return models


JSON_TYPES = {"number": (int, float), "string": (str,), "boolean": (bool,), "array": (list,), "object": (dict,)}


def conforms(entity: dict) -> list[str]:
    """What in the entity the Smart Data Models' definitions of its type do not allow."""
    model = smart_data_models()[entity["type"]]
    wrong = []
    for name, attribute in entity.items():
        if name in ("id", "type", "@context"):
            continue
        definitions = model.get(name)
        if not definitions:
            wrong.append(f"{name}: not an attribute of {entity['type']}")
            continue
        value = attribute.get("value", attribute.get("object"))
        if not any(d.get("typeNGSI") == attribute["type"] and isinstance(value, JSON_TYPES[d["type"]])
                   and not (d["type"] == "number" and isinstance(value, bool))
                   and (d.get("format") != "date-time" or parse_time(value))
                   and (not d.get("enum") or value in d["enum"]) for d in definitions):
            allowed = [(d.get("typeNGSI"), d["type"], d.get("enum")) for d in definitions]
            wrong.append(f"{name}: {attribute} fits none of {allowed}")
    return wrong


def entities() -> list[dict]:
    window = SegmentWindow("S1", "Z1", T0, T0 + 60, 40, 2400.0, 18.5, 0.31, 0.69, 7.1, "severe", 48.0)
    point_view = {"point_id": "P1", "depth_cm": 28.0, "updated": "2026-07-20T08:00:00.000Z", "level": "closure",
                  "sensor_health": "ok"}
    lot_view = {"availableSpotNumber": 20, "occupiedSpotNumber": 180, "occupancy": 0.9, "status": "almostFull",
                "updated": "2026-07-20T08:00:00.000Z"}
    texts = {"zh-CN": ("积水封路", "积水28厘米。", "勿驶入。"), "en-US": ("Road closed by waterlogging", "28 cm.", "Keep out.")}
    _, closure = Incident("waterlogging.P1.1").message(S.cap, "Alert", T0, bilingual(
        texts, "Met", "Road waterlogging", "Avoid", "Immediate", "Severe", "Observed", [("zone_id", "Z1"), ("point_id", "P1")],
        [circle_area(POINT.name, POINT.lat, POINT.lon, 0.3)]))
    _, evacuate = Incident("evacuation.Z1.1").message(S.cap, "Alert", T0, bilingual(
        texts, "Safety", "Flood evacuation", "Evacuate", "Immediate", "Extreme", "Likely", [("zone_id", "Z1")],
        [zone_area(ZONE)]))
    rain = {"zone_id": "Z1", "as_of": "2026-07-20T08:00:00.000Z", "signal": "orange", "rain_1h_mm": 52.0,
            "rain_3h_mm": 61.5, "gauges_reporting": 3, "gauges_silent": 1}
    people = {"zone_id": "Z1", "people": 120, "evacuation_order": "evacuation.Z1.1", "shelter_id": "V9",
              "told_to_evacuate": 118}
    return [flood_monitoring(POINT, point_view, S), flood_monitoring(FAR, None, S), traffic_flow(SEGMENT, window),
            traffic_flow(SEGMENT, None), off_street_parking(LOT, lot_view), alert_entity(closure), alert_entity(evacuate),
            rainstorm_alert(ZONE, rain), evacuation_alert(ZONE, people)]


@pytest.mark.parametrize("entity", entities(), ids=lambda e: e["id"])
def test_every_attribute_is_as_the_smart_data_models_define_it(entity):
    assert conforms(entity) == []


def test_the_check_finds_what_the_models_do_not_allow():
    entity = flood_monitoring(POINT, None, S)
    assert conforms({**entity, "depth": {"type": "Property", "value": 1}}) == ["depth: not an attribute of FloodMonitoring"]
    assert len(conforms({**entity, "currentLevel": {"type": "Property", "value": "deep"}})) == 1
    assert len(conforms({**entity, "location": {"type": "Property", "value": {}}})) == 1  # not a GeoProperty


def test_the_entities_say_what_a_city_reads_off_them():
    point, _, flow, _, lot, closure, evacuate, rainstorm, evacuation = entities()
    level = (point["currentLevel"]["value"], point["floodLevelStatus"]["value"], point["dangerLevel"]["value"])
    assert level == (0.28, "closure", 0.27)
    assert point["location"]["value"] == {"type": "Point", "coordinates": [113.65, 34.75]}
    assert (flow["intensity"]["value"], flow["congested"]["value"], flow["dateObserved"]["value"]) == (
        40, True, "2026-07-20T08:00:00.000Z/2026-07-20T08:01:00.000Z")
    assert lot["status"]["value"] == ["almostFull"] and lot["category"]["value"] == ["underground"]
    kind = (closure["category"]["value"], closure["subCategory"]["value"], closure["severity"]["value"])
    assert kind == ("weather", "flood", "high")
    assert closure["name"]["value"] == "Road closed by waterlogging" and closure["data"]["value"]["point_id"] == "P1"
    assert evacuate["location"]["value"]["type"] == "Polygon" and evacuate["severity"]["value"] == "critical"
    assert "location" not in off_street_parking(Lot("L2", "No coordinates", "Z1", 10), None)
    # A zone's state: its rainstorm signal as a severity, its evacuation with its people counted.
    assert (rainstorm["id"], rainstorm["severity"]["value"], rainstorm["data"]["value"]["rain_1h_mm"]) == (
        "urn:ngsi-ld:WeatherAlert:rainstorm:Z1", "high", 52.0)
    assert rainstorm["location"]["value"]["type"] == "Polygon" and rainstorm["areaServed"]["value"] == "Z1"
    assert evacuation["data"]["value"] == {"order_id": "evacuation.Z1.1", "shelter_id": "V9", "people_in_zone": 120,
                                           "people_told_to_evacuate": 118}
    assert rainstorm_alert(ZONE, {"signal": None}) is None and evacuation_alert(ZONE, {"people": 3}) is None
    two_pieces = Zone("Z2", "Islands", ZONE.polygon, [[(35.0, 114.0), (35.0, 114.1), (35.1, 114.1), (35.0, 114.0)]])
    assert rainstorm_alert(two_pieces, rainstorm["data"]["value"])["location"]["value"]["type"] == "MultiPolygon"
    stuck = flood_monitoring(POINT, {"depth_cm": 40.0, "updated": "2026-07-20T08:00:00.000Z", "level": None,
                                     "sensor_health": "stuck"}, S)
    assert stuck["floodLevelStatus"]["value"] == "sensorStuck"


def test_the_query_language_compares_numbers_strings_and_booleans():
    point, far, flow, _, lot, *_ = entities()
    everything = [point, far, flow, lot]

    def found(q, ids=None):
        return [e["id"] for e in select(everything, ids, query_filter(q), lambda e: True)]

    assert found('floodLevelStatus=="closure"') == [point["id"]]
    assert found("currentLevel>=0.27;currentLevel<0.3") == [point["id"]]
    assert found("congested==true") == [flow["id"]]
    assert found('status=="almostFull"') == [lot["id"]]
    assert found(None, {far["id"]}) == [far["id"]]
    assert not query_filter('currentLevel>"high"')(point)  # a number is not compared with a string
    with pytest.raises(BadRequest):
        query_filter("currentLevel=~0.2")
    with pytest.raises(BadRequest):
        query_filter("currentLevel>=deep")


def test_near_and_within_find_the_entities_with_a_location_there():
    point, far, flow, _, lot, closure, evacuate, *_ = entities()
    everything = [point, far, flow, lot, closure, evacuate]
    near = geo_filter("near;maxDistance==500", "Point", "[113.65,34.75]")
    anything = query_filter(None)
    assert [e["id"] for e in select(everything, None, anything, near)] == [closure["id"], point["id"], lot["id"]]
    not_near = geo_filter("near;minDistance==5000", "Point", "[113.65,34.75]")
    assert [e["id"] for e in select(everything, None, anything, not_near)] == [far["id"]]
    box = "[[[113.64,34.74],[113.66,34.74],[113.66,34.76],[113.64,34.76],[113.64,34.74]]]"
    assert [e["id"] for e in select(everything, None, anything, geo_filter("within", "Polygon", box))] == [
        closure["id"], point["id"], lot["id"]]
    for bad in (("near", "Point", "[113.65,34.75]"), ("near;maxDistance==5", "Polygon", box), ("over", "Point", "[1,2]"),
                ("within", "Polygon", "[1,2"), ("within", None, None), ("within", "GeometryCollection", "[]"),
                ("near;maxDistance==5", "Point", "[]"), ("near;maxDistance==far", "Point", "[1,2]"), ("within", "Foo", "[1]")):
        with pytest.raises(BadRequest):
            geo_filter(*bad)
