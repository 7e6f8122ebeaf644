"""Shelters fill up: a zone's order goes to the nearest open shelter with room, and when its
shelter fills, the people still on their way are sent to the next one."""

from __future__ import annotations

import orjson

from agents.evacuation import EvacuationStage, FloodZonesStage, nearest_shelter
from schemas.records import EvacuationOrder, ShelterOccupancy, Whereabouts, ZoneFlood
from schemas.reference import CityMap, Venue, Zone
from streams import topics
from streams.effects import Effects, Source
from streams.reference import Reference
from streams.settings import Settings
from streams.state import Batch

S = Settings()
T0 = 1_784_534_400.0


def square(lat, lon, side=0.02):
    return [(lat, lon), (lat, lon + side), (lat + side, lon + side), (lat + side, lon), (lat, lon)]


LOW = Zone("Z1", "Low town", square(30.30, 120.10))
NEAR = Venue("SH-near", "Near school", "Z2", "shelter", 2, 30.33, 120.11)
NEXT = Venue("SH-next", "Next gym", "Z3", "shelter", 100, 30.36, 120.11)
FAR = Venue("SH-far", "Far hall", "Z4", "shelter", 100, 30.50, 120.11)


def reference() -> Reference:
    ref = Reference(S)
    ref.city.zones.update({z.zone_id: z for z in (LOW, Zone("Z2", "Z2", []), Zone("Z3", "Z3", []), Zone("Z4", "Z4", []))})
    ref.city.venues.update({v.venue_id: v for v in (NEAR, NEXT, FAR)})
    return ref


def src(topic: str = "t") -> Source:
    return Source(topic, 0, 0, b"k", b"{}")


def sent(e: Effects, topic) -> list[dict]:
    return [orjson.loads(v) for t, _, v, _ in e.sends if t is topic]


def test_a_full_shelter_is_passed_over():
    city = CityMap(venues={v.venue_id: v for v in (NEAR, NEXT)})
    assert nearest_shelter(LOW, city, {"Z1"}) == NEAR
    assert nearest_shelter(LOW, city, {"Z1"}, full={"SH-near"}) == NEXT
    assert nearest_shelter(LOW, city, {"Z1"}, full={"SH-near", "SH-next"}) is None


def test_when_its_shelter_fills_a_zone_under_an_order_is_sent_to_the_next_one():
    stage, e = FloodZonesStage(0, S, reference()), Effects("flood_zones", Batch("cb:{x.0}", 0, {}))
    stage.restore({})
    stage.on_event(ZoneFlood("Z1", "rain.Z1", "rain", "red", T0), src(), e)
    (order,) = sent(e, topics.evacuation_orders)
    assert (order["action"], order["shelter_id"]) == ("evacuate", "SH-near")
    stage.on_event(ShelterOccupancy("SH-near", "Z2", 1, T0 + 60), src(), e)
    assert len(sent(e, topics.evacuation_orders)) == 1  # room for one more
    stage.on_event(ShelterOccupancy("SH-near", "Z2", 2, T0 + 120), src(), e)
    stage.on_event(ShelterOccupancy("SH-near", "Z2", 2, T0 + 130), src(), e)  # full already: nothing more
    redirect = sent(e, topics.evacuation_orders)[1:]
    assert [(o["action"], o["order_id"], o["shelter_id"], o["reason"]) for o in redirect] == [
        ("redirect", order["order_id"], "SH-next", "rain:red")]
    # Another zone ordered out now goes straight to the shelter with room.
    stage.on_event(ZoneFlood("Z4", "rain.Z4", "rain", "red", T0 + 200), src(), e)
    assert sent(e, topics.evacuation_orders)[-1]["shelter_id"] == "SH-next"


def test_people_still_on_their_way_are_told_the_next_shelter_and_those_arrived_are_not():
    stage, e = EvacuationStage(0, S, reference()), Effects("evacuation", Batch("cb:{x.0}", 0, {}))
    stage.restore({})
    for token in ("k1.a", "k1.b", "k1.c"):
        stage.on_event(Whereabouts("Z1", token, True, T0), src(), e)
    stage.on_event(EvacuationOrder("evac.Z1", "Z1", "evacuate", T0 + 60, "rain:red", "SH-near"), src(), e)
    assert [n["to"] for n in sent(e, topics.notices) if n["kind"] == "evacuate"] == ["k1.a", "k1.b", "k1.c"]
    # k1.a reaches the shelter (it leaves Z1 for the shelter's zone), then the shelter is full.
    stage.on_event(Whereabouts("Z1", "k1.a", False, T0 + 600, "SH-near"), src(), e)
    stage.on_event(EvacuationOrder("evac.Z1", "Z1", "redirect", T0 + 700, "rain:red", "SH-next"), src(), e)
    changed = [n for n in sent(e, topics.notices) if n["kind"] == "shelter_changed"]
    assert [(n["to"], n["shelter_id"]) for n in changed] == [("k1.b", "SH-next"), ("k1.c", "SH-next")]
    assert "Near school is full: go to Next gym instead" in dict(changed[0]["text"])["en-US"]
    update = sent(e, topics.alerts)[-1]
    assert update["msg_type"] == "Update" and dict(update["info"][0]["parameters"])["shelter_id"] == "SH-next"
    # Someone arriving in the zone from now on is sent to the next shelter.
    stage.on_event(Whereabouts("Z1", "k1.d", True, T0 + 800), src(), e)
    assert sent(e, topics.notices)[-1]["shelter_id"] == "SH-next"


def test_a_check_in_tells_the_shelter_choosing_stage_the_occupancy():
    stage, e = EvacuationStage(0, S, reference()), Effects("evacuation", Batch("cb:{x.0}", 0, {}))
    stage.restore({})
    stage.on_event(Whereabouts("Z2", "k1.a", True, T0, "SH-near"), src(), e)
    stage.on_event(Whereabouts("Z2", "k1.b", True, T0 + 60, "SH-near"), src(), e)
    stage.on_event(Whereabouts("Z2", "k1.a", False, T0 + 120), src(), e)  # leaves
    assert [(o["shelter_id"], o["occupancy"]) for o in sent(e, topics.shelter_occupancy)] == [
        ("SH-near", 1), ("SH-near", 2), ("SH-near", 1)]
