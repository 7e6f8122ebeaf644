"""A city's map from GeoJSON: every layer's geometry becomes its record, and what is wrong is said
with the feature and the reason, so that a person can put it right."""

from __future__ import annotations

import pytest

from schemas.cap import zone_area
from schemas.reference import CityMap, Zone
from streams.tools.city_load import read_city, records_to_publish


def feature(layer, fid, geometry, **properties):
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": {"layer": layer, **properties}}


def square(lon, lat, size=0.01):
    return [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]


CITY = {"type": "FeatureCollection", "features": [
    feature("zones", "Z1", {"type": "MultiPolygon",
                            "coordinates": [[square(113.60, 34.70, 0.01)], [square(113.70, 34.70, 0.05)]]}, name="Jinshui"),
    feature("segments", "S1", {"type": "LineString", "coordinates": [[113.65, 34.75], [113.66, 34.75], [113.66, 34.76]]},
            name="Jingguang Rd", zone_id="Z1", road_class="arterial", free_flow_kmh=60, lanes=3),
    feature("points", "P1", {"type": "Point", "coordinates": [113.65, 34.75]}, name="Jingguang underpass", zone_id="Z1",
            segment_id="S1", kind="underpass"),
    feature("gauges", "G1", {"type": "Point", "coordinates": [113.66, 34.76]}, zone_id="Z1"),
    feature("lots", "L1", {"type": "Polygon", "coordinates": [square(113.651, 34.751, 0.001)]}, name="Jinshui underground",
            zone_id="Z1", capacity=300, underground=True),
    feature("shelters", "V1", {"type": "Point", "coordinates": [113.72, 34.72]}, name="No. 1 Middle School", zone_id="Z1",
            capacity=800),
    feature("intersections", "J1", {"type": "Point", "coordinates": [113.66, 34.75]}, name="Jingguang / Nongye", zone_id="Z1",
            approaches=[{"approach_id": "J1-N", "segment_id": "S1", "phase": "NS", "lanes": 2}]),
]}


def test_every_layer_becomes_its_record_from_its_geometry():
    loaded = read_city(CITY)
    assert loaded.errors == []
    city = loaded.city
    zone = city.zones["Z1"]
    assert zone.polygon[0] == (34.70, 113.70) and len(zone.other_parts) == 1  # the larger part first
    assert len(zone_area(zone).polygons) == 2  # a CAP area of a zone in two pieces has both
    assert city.segments["S1"].length_km == pytest.approx(0.915 + 1.112, abs=0.01)  # measured along the line
    assert (city.points["P1"].lat, city.points["P1"].lon, city.points["P1"].kind) == (34.75, 113.65, "underpass")
    lot = city.lots["L1"]
    assert 34.751 < lot.lat < 34.752 and 113.651 < lot.lon < 113.652 and lot.underground
    assert (city.venues["V1"].kind, city.venues["V1"].capacity) == ("shelter", 800)
    assert city.intersections["J1"].approaches[0].segment_id == "S1"


def test_what_is_wrong_is_said_feature_by_feature_and_nothing_is_guessed():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    bad = {"type": "FeatureCollection", "features": [
        feature("lots", "L2", None, name="No coordinates", zone_id="Z1", capacity=10),
        feature("zones", "Z2", bowtie, name="Bow tie"),
        feature("points", "P2", {"type": "Polygon", "coordinates": [square(0, 0)]}, name="Area", zone_id="Z1", segment_id=None),
        feature("lots", "L3", {"type": "Point", "coordinates": [113.6, 34.7]}, name="Nowhere", zone_id="Z9", capacity=10),
        feature("lots", "L4", {"type": "Point", "coordinates": [113.6, 34.7]}, name="Negative", zone_id="Z1", capacity=-5),
        feature("parks", "K1", {"type": "Point", "coordinates": [0, 0]}),
        feature("gauges", None, {"type": "Point", "coordinates": [0, 0]}, zone_id="Z1"),
    ]}
    errors = read_city(bad, CityMap(zones={"Z1": Zone("Z1", "Jinshui", [])})).errors
    assert len(errors) == 7, errors
    assert errors[0].startswith("feature 0 (lots L2): no geometry: a lot needs a Point or Polygon or MultiPolygon")
    assert "not valid: Self-intersection" in errors[1]
    assert "a Polygon geometry: a point is a Point" in errors[2]
    assert "capacity" in errors[3] and errors[3].startswith("feature 4 (lots L4)")
    assert "properties.layer must be one of" in errors[4] and "no id" in errors[5]
    assert errors[6] == "lot L3: zone_id 'Z9' is not a zone in the file or the city's map"


def test_what_would_change_against_the_map_now_published():
    loaded = read_city(CITY)
    now = CityMap(zones={"Z1": loaded.city.zones["Z1"]}, lots={"L1": loaded.city.lots["L1"]})
    changes = loaded.changes(now)
    assert changes["zones"] == {"new": [], "changed": [], "unchanged": ["Z1"]}
    assert changes["segments"]["new"] == ["S1"]
    roles = [role for role, _, _ in records_to_publish(loaded, now)]
    assert roles == ["segments", "intersections", "points", "gauges", "venues"]  # unchanged ones are not sent again


def test_malformed_features_and_numeric_ids_are_said_not_crashed_on():
    point = {"type": "Point", "coordinates": [113.6, 34.7]}
    holed = {"type": "Polygon", "coordinates": [square(113.6, 34.7, 0.1), square(113.62, 34.72, 0.01)]}
    odd = {"type": "FeatureCollection", "features": [
        "not a feature", {"type": "Feature", "properties": ["layer"], "geometry": point},
        feature(["lots"], "L1", point), feature("gauges", 0, point, zone_id="Z1"), feature("gauges", 1, point, zone_id="Z1"),
        {"type": "Feature", "id": 1, "geometry": point, "properties": {"layer": "gauges", "zone_id": "Z1"}},
        feature("zones", "Z2", holed, name="Ring"), feature("gauges", "G5", "a string", zone_id="Z1")]}
    loaded = read_city(odd, CityMap(zones={"Z1": Zone("Z1", "Jinshui", [])}))
    assert sorted(loaded.city.gauges) == ["0", "1"]  # ids as text, 0 among them
    errors = loaded.errors
    assert errors[0] == "feature 0: not a GeoJSON Feature with properties" and errors[1].startswith("feature 1:")
    assert "properties.layer must be one of" in errors[2]
    assert errors[3] == "feature 5 (gauges 1): a second gauge with this id"
    assert "has holes" in errors[4] and "a str geometry" in errors[5] and len(errors) == 6
