"""What the map draws: each zone, point and car park with its state, and nothing of people."""

from __future__ import annotations

from agents.city_map import PAGE, city_state
from agents.evacuation import ZoneFloodWatch
from schemas.reference import CityMap, Lot, WaterloggingPoint, Zone

RING = [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)]


def test_each_place_is_drawn_with_its_state():
    city = CityMap(zones={"Z1": Zone("Z1", "Jinshui", RING, [[(34.9, 113.6), (34.9, 113.7), (35.0, 113.6), (34.9, 113.6)]]),
                          "Z2": Zone("Z2", "Erqi", [])},
                   points={"P1": WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65)},
                   lots={"L1": Lot("L1", "Jinshui underground", "Z1", 100, lat=34.751, lon=113.651),
                         "L2": Lot("L2", "No coordinates", "Z1", 100)})
    state = city_state(city, {"Z1": {"signal": "orange"}}, {"Z1": ZoneFloodWatch(evacuation_order="evacuation.Z1.1")},
                       {"P1": {"depth_cm": 28.0, "level": "closure", "alert_level": "closure", "warning_of": "severe",
                               "sensor_health": "ok"}},
                       {"L1": {"status": "almostFull", "occupancy": 0.9}}, 1_784_534_400.0)
    z1, z2 = state["zones"]
    assert (z1["signal"], z1["evacuation"], len(z1["rings"])) == ("orange", True, 2)
    assert (z2["signal"], z2["evacuation"], z2["rings"]) == (None, False, [])
    (p1,) = state["points"]
    assert (p1["level"], p1["warning_of"], p1["segment_id"]) == ("closure", "severe", "S1")
    assert [(lot["id"], lot["status"]) for lot in state["lots"]] == [("L1", "almostFull")]  # a lot with no place is not drawn
    assert state["as_of"] == "2026-07-20T08:00:00.000Z"


def test_the_page_asks_nothing_of_another_host():
    page = PAGE.read_text()
    assert "/map/state.json" in page
    assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in page
