"""A city's map from GeoJSON onto the reference topics: `citybrain city load FILE [--dry-run]`.

Each feature names its layer in `properties.layer` (zones, segments, intersections, points,
gauges, lots, venues; `shelters` are venues of kind shelter) and its id in `properties.id` (or
the feature's `id`); its other properties are the record's fields (`schemas/reference.py`). The
geometry gives the rest: a zone's Polygon or MultiPolygon, a segment's LineString (its length is
measured along it), the Point of a monitored point, gauge or junction, and the Point or
Polygon (its centre) of a car park or venue. Every feature is checked before anything is
published, with reasons a person can act on; a file with any error publishes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from shapely.validation import explain_validity

from schemas.contract import Rejected, from_dict
from schemas.reference import CityMap, distance_m
from streams.admin import existing_topics
from streams.reference import CONTRACTS, Reference
from streams.settings import Settings
from streams.tools.feed import Publisher

LAYERS = {"shelters": "venues", **{role: role for role in CONTRACTS}}
GEOMETRY = {"zones": ("Polygon", "MultiPolygon"), "segments": ("LineString", "MultiLineString"),
            "intersections": ("Point",), "points": ("Point",), "gauges": ("Point",),
            "lots": ("Point", "Polygon", "MultiPolygon"), "venues": ("Point", "Polygon", "MultiPolygon")}
ZONED = ("segments", "intersections", "points", "gauges", "lots", "venues")  # records that name their zone


@dataclass
class Loaded:
    """What a file holds, checked: the records by layer, and what is wrong with the rest."""

    city: CityMap = field(default_factory=CityMap)
    errors: list[str] = field(default_factory=list)

    def changes(self, current: CityMap) -> dict[str, dict[str, list[str]]]:
        """Per layer, the ids that are new, changed and unchanged against the map now published."""
        out = {}
        for role in CONTRACTS:
            now, loaded = getattr(current, role), getattr(self.city, role)
            out[role] = {"new": sorted(i for i in loaded if i not in now),
                         "changed": sorted(i for i in loaded if i in now and now[i] != loaded[i]),
                         "unchanged": sorted(i for i in loaded if i in now and now[i] == loaded[i])}
        return out


def read_city(collection: Any, current: CityMap | None = None) -> Loaded:
    """Check every feature of a GeoJSON FeatureCollection and turn it into its reference record;
    zones and segments are looked up in the file first, then in the map now published."""
    loaded = Loaded()
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        loaded.errors.append("the file is not a GeoJSON FeatureCollection")
        return loaded
    features = collection.get("features")
    for n, feature in enumerate(features if isinstance(features, list) else []):
        if not isinstance(feature, dict) or not isinstance(feature.get("properties") or {}, dict):
            loaded.errors.append(f"feature {n}: not a GeoJSON Feature with properties")
            continue
        properties = dict(feature.get("properties") or {})
        layer = properties.pop("layer", None)
        given_id = properties.pop("id", None)
        given_id = given_id if given_id is not None else feature.get("id")
        record_id = "" if given_id is None else str(given_id).strip()
        where = f"feature {n} ({layer or 'no layer'} {record_id or 'without an id'})"
        role = LAYERS.get(layer) if isinstance(layer, str) else None
        if role is None:
            loaded.errors.append(f"{where}: properties.layer must be one of {', '.join(sorted(LAYERS))}")
            continue
        if not record_id:
            loaded.errors.append(f"{where}: no id (properties.id or the feature's id)")
            continue
        try:
            payload = {**properties, **_from_geometry(role, feature.get("geometry"))}
            contract, id_field = CONTRACTS[role]
            payload[id_field] = record_id
            if layer == "shelters":
                payload["kind"] = "shelter"
            record: Any = from_dict(contract, payload)
        except (Rejected, ValueError) as exc:
            loaded.errors.append(f"{where}: {exc}")
            continue
        table = getattr(loaded.city, role)
        if record_id in table:
            loaded.errors.append(f"{where}: a second {role[:-1]} with this id")
        table[record_id] = record
    loaded.errors += _unknown_references(loaded.city, current or CityMap())
    return loaded


def _from_geometry(role: str, geometry: Any) -> dict[str, Any]:
    """The fields a feature's geometry gives its record."""
    wanted = GEOMETRY[role]
    if not geometry:
        raise ValueError(f"no geometry: a {role[:-1]} needs a {' or '.join(wanted)} (coordinates are not guessed)")
    if not isinstance(geometry, dict) or geometry.get("type") not in wanted:
        kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
        raise ValueError(f"a {kind} geometry: a {role[:-1]} is a {' or '.join(wanted)}")
    try:
        shaped = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"its {geometry['type']} cannot be read: {exc}") from None
    if shaped.is_empty:
        raise ValueError(f"its {geometry['type']} is empty")
    if not shaped.is_valid:
        raise ValueError(f"its {geometry['type']} is not valid: {explain_validity(shaped)}")
    if role == "zones":
        parts = sorted(getattr(shaped, "geoms", [shaped]), key=lambda p: -p.area)  # the largest part first
        if any(part.interiors for part in parts):
            raise ValueError("its polygon has holes: a zone is drawn without them (give the zone inside its own feature)")
        rings = [[[lat, lon] for lon, lat, *_ in part.exterior.coords] for part in parts]
        return {"polygon": rings[0], "other_parts": rings[1:]}
    if role == "segments":
        lines = getattr(shaped, "geoms", [shaped])
        metres = sum(distance_m(a[1], a[0], b[1], b[0]) for line in lines for a, b in pairwise(line.coords))
        return {"length_km": round(metres / 1000, 4)}
    centre = shaped.representative_point() if shaped.geom_type != "Point" else shaped  # inside the car park's outline
    return {"lat": round(centre.y, 7), "lon": round(centre.x, 7)}


def _unknown_references(city: CityMap, current: CityMap) -> list[str]:
    zones = city.zones.keys() | current.zones.keys()
    segments = city.segments.keys() | current.segments.keys()
    errors = [f"{role[:-1]} {rid}: zone_id {r.zone_id!r} is not a zone in the file or the city's map"
              for role in ZONED for rid, r in getattr(city, role).items() if r.zone_id not in zones]
    errors += [f"point {pid}: segment_id {p.segment_id!r} is not a segment in the file or the city's map"
               for pid, p in city.points.items() if p.segment_id and p.segment_id not in segments]
    errors += [f"intersection {jid}: approach {a.approach_id} is fed by segment {a.segment_id!r}, which is not in the "
               "file or the city's map"
               for jid, j in city.intersections.items() for a in j.approaches if a.segment_id not in segments]
    return errors


def load_file(path: Path, current: CityMap) -> Loaded:
    try:
        collection = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return Loaded(errors=[f"{path}: cannot be read as JSON: {exc}"])
    return read_city(collection, current)


def records_to_publish(loaded: Loaded, current: CityMap) -> list[tuple[str, str, Any]]:
    """(role, id, record) of what is new or changed, zones first so that a worker reading along
    finds a record's zone before the record."""
    changes = loaded.changes(current)
    return [(role, rid, getattr(loaded.city, role)[rid])
            for role in CONTRACTS for rid in (*changes[role]["new"], *changes[role]["changed"])]


async def load_city(settings: Settings, path: str, dry_run: bool, say: Callable[[str], None]) -> bool:
    """Check the file against the map now published, say what would change, and (unless a dry
    run, and only with no error) publish it. Returns whether the file was without error."""
    reference = Reference(settings)
    # A broker without the map's topics has no map yet: a dry run reads none (and creates none).
    if set(reference.topics) <= existing_topics(settings):
        await reference.start()
        await reference.stop()
    loaded = load_file(Path(path), reference.city)
    for error in loaded.errors:
        say(f"error: {error}")
    for role, change in loaded.changes(reference.city).items():
        if any(change.values()):
            say(f"{role}: {len(change['new'])} new, {len(change['changed'])} changed, {len(change['unchanged'])} unchanged"
                + "".join(f"\n  {what}: {' '.join(ids)}" for what, ids in change.items() if ids and what != "unchanged"))
    if loaded.errors:
        say(f"{len(loaded.errors)} errors: nothing published")
        return False
    if dry_run:
        say("dry run: nothing published")
        return True
    records = records_to_publish(loaded, reference.city)
    async with Publisher(settings) as pub:
        for role, rid, record in records:
            await pub.send(role, rid, record)
    say(f"published {len(records)} records")
    return True
