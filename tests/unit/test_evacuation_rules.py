"""Evacuation rules: which flood levels set orders off, the nearest open shelter, notices to people."""

import pytest

from agents.evacuation import evacuation_notice, lifted_notice, nearest_shelter, reached, triggers_for
from schemas.reference import CityMap, Venue, Zone
from streams.settings import Settings

S = Settings()
T0 = 1_780_000_000.0
TOKEN = "k1.person"


def square(lat, lon, side=0.02):
    """A closed square ring with its south-west corner at (lat, lon)."""
    return [(lat, lon), (lat, lon + side), (lat + side, lon + side), (lat + side, lon), (lat, lon)]


ZONE = Zone("Z1", "Gongshu", square(30.30, 120.10))  # centre (30.31, 120.11)


def shelter(venue_id, zone_id, lat, lon, capacity=500):
    return Venue(venue_id, f"Shelter {venue_id}", zone_id, "shelter", capacity, lat, lon)


def city(*venues):
    return CityMap(venues={v.venue_id: v for v in venues})


# ---------------------------------------------------------------------------------------------
# triggers_for


def test_the_default_triggers_apply_to_every_zone():
    assert triggers_for("Z1", S.orders.evacuation_on) == [("rain", "red")]
    assert triggers_for("Z1", S.orders.garage_closure_on) == [("rain", "orange"), ("waterlogging", "severe")]


def test_zone_entries_replace_the_defaults_for_that_zone_only():
    entries = Settings.of(garage_closure_on=("rain:orange", "waterlogging:severe", "Z1=waterlogging:closure",
                                          "Z1=rain:yellow")).orders.garage_closure_on
    assert triggers_for("Z1", entries) == [("waterlogging", "closure"), ("rain", "yellow")]
    assert triggers_for("Z2", entries) == [("rain", "orange"), ("waterlogging", "severe")]


def test_a_zone_id_that_is_a_prefix_of_another_does_not_take_its_entries():
    entries = Settings.of(evacuation_on=("rain:red", "Z10=rain:blue")).orders.evacuation_on
    assert triggers_for("Z1", entries) == [("rain", "red")]
    assert triggers_for("Z10", entries) == [("rain", "blue")]


def test_no_entries_no_triggers():
    assert triggers_for("Z1", ()) == []


# ---------------------------------------------------------------------------------------------
# reached

RAIN = ("blue", "yellow", "orange", "red")
WATER = ("watch", "warning", "closure", "severe")


def test_the_rain_colours_in_the_settings_run_blue_yellow_orange_red():
    assert [rule.colour for rule in S.rain.signals] == list(RAIN)


@pytest.mark.parametrize("trigger", range(len(RAIN)))
@pytest.mark.parametrize("signal", range(len(RAIN)))
def test_a_rain_trigger_is_reached_at_its_colour_and_above(signal, trigger):
    got = reached({"Z1": ("rain", RAIN[signal])}, [("rain", RAIN[trigger])], S)
    assert got == (f"rain:{RAIN[signal]}" if signal >= trigger else None)


@pytest.mark.parametrize("trigger", range(len(WATER)))
@pytest.mark.parametrize("level", range(len(WATER)))
def test_a_waterlogging_trigger_is_reached_at_its_level_and_above(level, trigger):
    got = reached({"P1": ("waterlogging", WATER[level])}, [("waterlogging", WATER[trigger])], S)
    assert got == (f"waterlogging:{WATER[level]}" if level >= trigger else None)


def test_the_rain_order_follows_the_settings():
    # A city that names its signals by number, lowest first (and its orders by those names).
    s = Settings.of(rainstorm_signals=("one:12:50", "two:6:50", "three:3:50"), garage_closure_on=("rain:two",),
                 evacuation_on=("rain:three",))
    assert reached({"Z1": ("rain", "three")}, [("rain", "two")], s) == "rain:three"
    assert reached({"Z1": ("rain", "one")}, [("rain", "two")], s) is None


def test_a_source_of_the_other_kind_does_not_count():
    assert reached({"P1": ("waterlogging", "severe")}, [("rain", "blue")], S) is None
    assert reached({"Z1": ("rain", "red")}, [("waterlogging", "watch")], S) is None


def test_mixed_sources_reach_the_trigger_one_of_them_meets():
    levels = {"Z1": ("rain", "yellow"), "P1": ("waterlogging", "warning"), "P2": ("waterlogging", "severe")}
    assert reached(levels, [("rain", "orange"), ("waterlogging", "severe")], S) == "waterlogging:severe"


def test_with_several_triggers_met_the_first_trigger_is_named():
    levels = {"P1": ("waterlogging", "severe"), "Z1": ("rain", "red")}
    assert reached(levels, [("rain", "orange"), ("waterlogging", "severe")], S) == "rain:red"


def test_nothing_reached():
    levels = {"Z1": ("rain", "yellow"), "P1": ("waterlogging", "closure")}
    assert reached(levels, [("rain", "orange"), ("waterlogging", "severe")], S) is None
    assert reached({}, [("rain", "blue")], S) is None
    assert reached(levels, [], S) is None


# ---------------------------------------------------------------------------------------------
# nearest_shelter


def test_the_nearest_shelter_to_the_zone_centre_is_chosen():
    near = shelter("SH-near", "Z2", 30.32, 120.11)  # 0.01 deg north of the centre
    far = shelter("SH-far", "Z3", 30.35, 120.11)
    assert nearest_shelter(ZONE, city(far, near), {"Z1"}) == near


def test_distance_is_measured_on_the_ground_not_in_degrees():
    # At 60 deg N a degree of longitude is half a degree of latitude on the ground:
    # 0.02 deg east (about 1.1 km) is nearer than 0.015 deg north (about 1.7 km).
    zone = Zone("Z9", "North", square(59.99, 9.99))  # centre (60.0, 10.0)
    north = shelter("SH-north", "Z2", 60.015, 10.0)
    east = shelter("SH-east", "Z3", 60.0, 10.02)
    assert nearest_shelter(zone, city(north, east), {"Z9"}) == east


def test_the_closing_point_of_the_ring_does_not_pull_the_centre():
    # Centre of the square (30.30..30.32, 120.10..120.12) is (30.31, 120.11). Counting the closing
    # corner (30.30, 120.10) twice would put it at (30.308, 120.108), nearer the south-west shelter.
    centre = shelter("SH-centre", "Z2", 30.3105, 120.1105)
    south_west = shelter("SH-sw", "Z3", 30.307, 120.107)
    assert nearest_shelter(ZONE, city(centre, south_west), {"Z1"}) == centre


def test_shelters_in_unsafe_zones_are_skipped():
    inside = shelter("SH-in", "Z1", 30.31, 120.11)  # right at the centre, but the zone is evacuating
    ordered = shelter("SH-ordered", "Z2", 30.315, 120.11)  # in another zone under an order
    safe = shelter("SH-safe", "Z3", 30.40, 120.11)
    assert nearest_shelter(ZONE, city(inside, ordered, safe), {"Z1", "Z2"}) == safe


def test_shelters_without_capacity_are_skipped():
    closed = shelter("SH-closed", "Z2", 30.31, 120.11, capacity=0)
    open_ = shelter("SH-open", "Z3", 30.40, 120.11)
    assert nearest_shelter(ZONE, city(closed, open_), {"Z1"}) == open_


def test_venues_that_are_not_shelters_are_skipped():
    school = Venue("V-school", "No. 1 school", "Z2", "school", 2000, 30.31, 120.11)
    open_ = shelter("SH-open", "Z3", 30.40, 120.11)
    assert nearest_shelter(ZONE, city(school, open_), {"Z1"}) == open_


def test_no_open_shelter_gives_none():
    assert nearest_shelter(ZONE, city(), {"Z1"}) is None
    assert nearest_shelter(ZONE, city(shelter("SH1", "Z1", 30.31, 120.11), shelter("SH2", "Z2", 30.4, 120.1, 0)),
                           {"Z1"}) is None


def test_equally_near_shelters_are_chosen_by_id():
    zone = Zone("Z8", "Binary", square(30.0, 120.0, side=0.5))  # centre (30.25, 120.25), exact in floats
    a = shelter("SH-a", "Z2", 30.5, 120.25)
    b = shelter("SH-b", "Z3", 30.0, 120.25)
    assert nearest_shelter(zone, city(b, a), {"Z8"}) == a
    assert nearest_shelter(zone, city(a, b), {"Z8"}) == a


# ---------------------------------------------------------------------------------------------
# evacuation_notice and lifted_notice

SHELTER = shelter("SH1", "Z2", 30.32, 120.11)


def test_the_evacuation_notice_is_addressed_to_the_person_token():
    n = evacuation_notice("evac.Z1.1", T0, TOKEN, ZONE, SHELTER)
    assert (n.to, n.to_kind, n.kind) == (TOKEN, "person", "evacuate")
    assert n.zone_id == "Z1" and n.at == T0


def test_the_evacuation_notice_turns_the_safety_code_red_and_names_the_shelter():
    n = evacuation_notice("evac.Z1.1", T0, TOKEN, ZONE, SHELTER)
    assert n.safety_code == "red"
    assert n.shelter_id == "SH1"
    assert any(SHELTER.name in text for _, text in n.text)
    assert [lang for lang, _ in n.text] == ["zh-CN", "en-US"]


def test_without_an_open_shelter_the_notice_sends_people_to_higher_ground():
    n = evacuation_notice("evac.Z1.1", T0, TOKEN, ZONE, None)
    assert n.shelter_id is None and n.safety_code == "red"
    assert "higher ground" in dict(n.text)["en-US"]


def test_the_evacuation_notice_carries_the_order():
    assert evacuation_notice("evac.Z1.1", T0, TOKEN, ZONE, SHELTER).order_id == "evac.Z1.1"


def test_evacuation_notice_ids_are_deterministic_per_order_and_person():
    a = evacuation_notice("evac.Z1.1", T0, TOKEN, ZONE, SHELTER)
    assert evacuation_notice("evac.Z1.1", T0 + 60, TOKEN, ZONE, SHELTER).notice_id == a.notice_id
    assert evacuation_notice("evac.Z1.1", T0, "k1.other", ZONE, SHELTER).notice_id != a.notice_id
    assert evacuation_notice("evac.Z1.2", T0, TOKEN, ZONE, SHELTER).notice_id != a.notice_id


def test_the_lifted_notice_turns_the_safety_code_green_for_the_same_order():
    n = lifted_notice("evac.Z1.1", TOKEN, ZONE, T0 + 3600)
    assert (n.to, n.to_kind, n.kind) == (TOKEN, "person", "order_lifted")
    assert n.safety_code == "green"
    assert n.order_id == "evac.Z1.1"
    assert n.zone_id == "Z1" and n.at == T0 + 3600


def test_lifted_notice_ids_are_deterministic_and_differ_from_the_evacuation_notice():
    lifted = lifted_notice("evac.Z1.1", TOKEN, ZONE, T0)
    assert lifted_notice("evac.Z1.1", TOKEN, ZONE, T0 + 60).notice_id == lifted.notice_id
    assert lifted_notice("evac.Z1.1", "k1.other", ZONE, T0).notice_id != lifted.notice_id
    assert lifted.notice_id != evacuation_notice("evac.Z1.1", T0, TOKEN, ZONE, SHELTER).notice_id
