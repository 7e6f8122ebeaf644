"""The live-state API on the real broker and Redis: a worker answers NGSI-LD queries from the
city's state, read with ngsildclient (an NGSI-LD client from PyPI) and plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from ngsildclient import Client

from schemas.contract import parse_time
from schemas.events import ParkingEvent, WaterDepthReading
from schemas.reference import Lot, Segment, WaterloggingPoint, Zone

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T06:00:00Z")
STAGES = (("waterlogging", "water_depths"), ("parking", "parking_events"), ("cap_feed", "alerts"))


def get(url: str, accept: str = "application/json") -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_a_worker_answers_ngsi_ld_queries_from_the_citys_state(city_run):
    run = city_run(partitions=2)
    zone = Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)])
    points = [WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65, "underpass"),
              WaterloggingPoint("P2", "Nongye Rd dip", "Z1", None, 34.79, 113.69)]
    lot = Lot("L1", "Jinshui underground", "Z1", 10, underground=False, lat=34.751, lon=113.651)
    run.publish([("zones", "Z1", zone), ("segments", "S1", Segment("S1", "Jingguang Rd", "Z1", "arterial", 1.2, 60.0)),
                 ("lots", "L1", lot), *[("points", p.point_id, p) for p in points]])
    run.start_worker()
    plates = [f"豫A{i:05d}" for i in range(9)]
    depths = [("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 120 * i, d)) for i, d in enumerate([0, 10, 20, 28, 29])]
    entries = [("parking_events", "L1", ParkingEvent(f"in-{i}", "L1", p, "entry", T0 + 30 * i)) for i, p in enumerate(plates)]
    run.publish([*depths, ("water_depths", "P2", WaterDepthReading("W-P2", "P2", T0, 2.0)), *entries])
    run.wait_quiet(stages=STAGES)

    client = Client(hostname="127.0.0.1", port=run.web_port, verbose=False)
    assert sorted(client.types.list()) == ["Alert", "FloodMonitoring", "OffStreetParking", "TrafficFlowObserved",
                                           "WeatherAlert"]
    flooded = client.query(type="FloodMonitoring", q='floodLevelStatus=="closure"')
    assert [e.id for e in flooded] == ["urn:ngsi-ld:FloodMonitoring:P1"]
    p1 = client.entities.get("urn:ngsi-ld:FloodMonitoring:P1").to_dict()
    assert (p1["currentLevel"]["value"], p1["observationDateTime"]["value"]) == (0.29, "2026-07-20T06:08:00.000Z")
    near = client.query(type="FloodMonitoring,OffStreetParking",
                        gq="georel=near;maxDistance==500&geometry=Point&coordinates=[113.65,34.75]")
    assert sorted(e.id for e in near) == ["urn:ngsi-ld:FloodMonitoring:P1", "urn:ngsi-ld:OffStreetParking:L1"]
    (parking,) = client.query(type="OffStreetParking")
    assert (parking["occupiedSpotNumber"].value, parking["status"].value) == (9, ["almostFull"])
    alerts = [e.to_dict() for e in client.query(type="Alert", q='subCategory=="flood"')]
    assert {a["name"]["value"] for a in alerts} == {"Road closed by waterlogging at Jingguang underpass"}
    assert client.entities.count(type="TrafficFlowObserved") == 1  # a segment with no window yet still is one

    base = f"http://127.0.0.1:{run.web_port}/ngsi-ld/v1"
    box = "[[[113.64,34.74],[113.66,34.74],[113.66,34.76],[113.64,34.76],[113.64,34.74]]]"
    status, body, headers = get(f"{base}/entities?type=FloodMonitoring&georel=within&geometry=Polygon&coordinates={box}"
                                "&count=true")
    assert status == 200 and headers["NGSILD-Results-Count"] == "1" and "json-ld#context" in headers["Link"]
    assert [e["id"] for e in json.loads(body)] == ["urn:ngsi-ld:FloodMonitoring:P1"]
    status, body, _ = get(f"{base}/entities?type=FloodMonitoring&limit=1&offset=1", "application/ld+json")
    assert [e["id"] for e in json.loads(body)] == ["urn:ngsi-ld:FloodMonitoring:P2"] and "@context" in json.loads(body)[0]
    assert get(f"{base}/entities/urn:ngsi-ld:FloodMonitoring:P9")[0] == 404
    status, body, _ = get(f"{base}/entities?type=FloodMonitoring&q=currentLevel~=1")
    assert status == 400 and json.loads(body)["type"].endswith("BadRequestData")
    everything = get(f"{base}/entities?limit=1000")[1].decode()
    assert not any(plate in everything for plate in plates)  # people and plates are counted, never listed
