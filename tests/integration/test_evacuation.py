"""A flood reaching a zone on the real stack: garages close with notices to the cars parked in
them, the zone is evacuated with a notice to everyone last known there, shelters check people
in, and no raw identifier reaches anything downstream."""

from __future__ import annotations

import pytest
from lxml import etree
from ngsildclient import Client

from schemas.contract import parse_time
from schemas.events import HealthCodeScan, HealthCodeStatusChange, ParkingEvent, RainGaugeReading
from schemas.reference import Lot, RainGauge, Venue, Zone
from streams.privacy import Keyring
from tests.unit.test_cap import XSD
from tests.unit.test_ngsi_ld import conforms

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T06:00:00Z")
LOW = Zone("Z1", "Lower Town", [(30.20, 120.10), (30.20, 120.12), (30.22, 120.12), (30.22, 120.10), (30.20, 120.10)])
HILL = Zone("Z2", "Hill Town", [(30.22, 120.10), (30.22, 120.12), (30.24, 120.12), (30.24, 120.10), (30.22, 120.10)])
VENUES = [Venue("Z1-SHOP", "Riverside market", "Z1", "shop", 0, 30.21, 120.11),
          Venue("Z1-SHELTER", "Lower Town school", "Z1", "shelter", 300, 30.205, 120.105),
          Venue("Z2-SHOP", "Hill Town mall", "Z2", "shop", 0, 30.23, 120.11),
          Venue("Z2-SHELTER", "Hill Town gym", "Z2", "shelter", 500, 30.235, 120.115)]
LOTS = [Lot("Z1-UG", "Riverside underground car park", "Z1", 10, True, 5.0, 30.21, 120.11),
        Lot("Z1-SURF", "Riverside surface car park", "Z1", 10, False, 3.0, 30.21, 120.112),
        Lot("Z2-UG", "Hill Town underground car park", "Z2", 10, True, 5.0, 30.23, 120.11)]

# Raw identifiers as the city's systems send them; none may appear past ingestion.
PEOPLE = {name: f"3301061990010100{i}{i}" for i, name in enumerate("ABCDEF", start=1)}
PLATES = {name: f"浙A1000{i}" for i, name in enumerate(["P1", "P2", "P3", "P4", "P5"], start=1)}
STRAY_PLATE = "浙A99999"

ALL_STAGES = (
    ("health_intake", "health_scans"), ("health_intake", "health_status", "offset.health_status"),
    ("people", "person_scans"), ("people", "person_status", "offset.person_status"), ("people", "notices", "offset.notices"),
    ("zone_health", "zone_scans"), ("parking", "parking_events"), ("parking", "lot_orders", "offset.lot_orders"),
    ("rain", "rain_readings"), ("zone_rain", "gauge_rain"), ("flood_zones", "zone_floods"),
    ("evacuation", "whereabouts"), ("evacuation", "evacuation_orders", "offset.evacuation_orders"),
    ("flood_zones", "shelter_occupancy", "offset.shelter_occupancy"),
)


def status(name: str, colour: str, zone: str, minute: int):
    return ("health_status", PEOPLE[name], HealthCodeStatusChange(PEOPLE[name], colour, T0 + 60 * minute, None, zone))


def scan(name: str, venue: str, minute: int):
    scan_id = f"scan-{name}-{venue}-{minute}"
    return ("health_scans", venue, HealthCodeScan(scan_id, PEOPLE[name], venue, T0 + 60 * minute))


def parking(event_id: str, lot: str, plate: str, direction: str, minute: int):
    return ("parking_events", lot, ParkingEvent(event_id, lot, plate, direction, T0 + 60 * minute))


def rain(minutes: int, mm: float):
    return ("rain_readings", "G1", RainGaugeReading("G1", T0 + 60 * minutes, mm, 600.0))


def registrations():
    """Who lives where, with which health code."""
    return [status("A", "green", "Z1", 1), status("B", "green", "Z1", 1), status("C", "yellow", "Z1", 1),
            status("D", "green", "Z2", 1), status("E", "red", "Z1", 1)]


def everyday_life():
    """Who goes where, which cars are parked where; before any rain."""
    return [
        scan("B", "Z2-SHOP", 5),  # B is now last seen in Hill Town
        scan("E", "Z1-SHOP", 6), scan("E", "Z1-SHOP", 6),  # the venue's gateway sends E's red scan twice
        scan("C", "Z1-SHOP", 7), scan("F", "Z1-SHOP", 8),  # F: no status yet, green
        parking("e1", "Z1-UG", PLATES["P1"], "entry", 0), parking("e1", "Z1-UG", PLATES["P1"], "entry", 0),  # resent
        parking("e2", "Z1-UG", PLATES["P2"], "entry", 2), parking("e3", "Z1-UG", PLATES["P3"], "entry", 3),
        parking("e4", "Z1-SURF", PLATES["P4"], "entry", 4), parking("e5", "Z2-UG", PLATES["P5"], "entry", 5),
        parking("x2", "Z1-UG", PLATES["P2"], "exit", 2 + 130),  # 2 h 10 min: 15 free, then 2 started hours
        parking("x9", "Z1-SURF", STRAY_PLATE, "exit", 20),  # an exit the lot never saw enter
        # A status change the contract refuses: it must not carry the raw ID into the dead letters.
        ("health_status", PEOPLE["A"], b'{"person_id": "%s", "colour": "purple", "event_time": "2026-07-20T06:09:00Z"}'
         % PEOPLE["A"].encode()),
    ]


def test_a_flooded_zone_closes_its_garages_and_is_evacuated_to_an_open_shelter(city_run):
    run = city_run(garage_closure_on="rain:orange")
    tokens = Keyring(run.settings.privacy_keys)
    person = {name: tokens.token("person_id", raw) for name, raw in PEOPLE.items()}
    plate = {name: tokens.token("plate", raw) for name, raw in PLATES.items()}
    run.publish([("zones", z.zone_id, z) for z in (LOW, HILL)] + [("venues", v.venue_id, v) for v in VENUES]
                + [("lots", lot.lot_id, lot) for lot in LOTS] + [("gauges", "G1", RainGauge("G1", "Z1", 30.21, 120.11))])
    run.start_worker()
    # Codes are known before they are scanned: a scan and a status change read at the same moment
    # meet in whichever order their topics deliver them.
    run.publish(registrations())
    run.wait_quiet(stages=ALL_STAGES)
    run.publish(everyday_life())
    run.wait_quiet(stages=ALL_STAGES)

    # 60 mm: orange, the garages close. Another 50 mm: red, the zone is evacuated.
    run.publish([rain(150, 60.0)])
    run.wait_quiet(stages=ALL_STAGES)
    run.publish([rain(160, 50.0)])
    run.wait_quiet(stages=ALL_STAGES)
    # A and C reach the open shelter in Hill Town and scan their codes.
    run.publish([scan("A", "Z2-SHELTER", 175), scan("C", "Z2-SHELTER", 180)])
    run.wait_quiet(stages=ALL_STAGES)
    shelters = run.merged("evacuation", "shelters")
    # The zone's state over NGSI-LD: its red signal, its evacuation with its people counted.
    client = Client(hostname="127.0.0.1", port=run.web_port, verbose=False)
    (rainstorm,) = [e.to_dict() for e in client.query(type="WeatherAlert", q='severity=="critical"')]
    (evacuation,) = [e.to_dict() for e in client.query(type="Alert", q='subCategory=="evacuation"')]
    assert (rainstorm["id"], rainstorm["data"]["value"]["signal"]) == ("urn:ngsi-ld:WeatherAlert:rainstorm:Z1", "red")
    assert (evacuation["areaServed"]["value"], evacuation["data"]["value"]["shelter_id"],
            evacuation["data"]["value"]["people_told_to_evacuate"]) == ("Z1", "Z2-SHELTER", 4)
    assert conforms(rainstorm) == [] and conforms(evacuation) == []
    # The rain stops; three hours on (and the hold) red steps down, and the order is lifted.
    run.publish([rain(160 + 10 * k, 0.0) for k in range(1, 31)])
    run.wait_quiet(stages=ALL_STAGES)

    notices = run.records("notices")
    by_kind: dict[str, list[dict]] = {}
    for n in notices:
        by_kind.setdefault(n["kind"], []).append(n)
    assert len({n["notice_id"] for n in notices}) == len(notices), "every notice once"
    assert sorted(n["to"] for n in by_kind["move_vehicle"]) == sorted([plate["P1"], plate["P3"]])
    assert {n["lot_id"] for n in by_kind["move_vehicle"]} == {"Z1-UG"}
    evacuees = sorted(person[n] for n in "ACEF")
    assert sorted(n["to"] for n in by_kind["evacuate"]) == evacuees
    assert {(n["shelter_id"], n["safety_code"], n["zone_id"]) for n in by_kind["evacuate"]} == {("Z2-SHELTER", "red", "Z1")}
    assert sorted(n["to"] for n in by_kind["checked_in"]) == sorted([person["A"], person["C"]])
    assert sorted(n["to"] for n in by_kind["order_lifted"]) == evacuees
    assert sorted((n["to"], n["kind"]) for n in by_kind["deny_entry"] + by_kind["check_entry"]) == sorted(
        [("Z1-SHOP", "deny_entry"), ("Z1-SHOP", "check_entry"), ("Z2-SHELTER", "check_entry")])  # E red; C yellow twice
    assert shelters["Z2-SHELTER"]["occupancy"] == 2
    lower_town = run.merged("zone_health", "zones")["Z1"]  # E's resent scan counted once
    assert (lower_town["window_start"], lower_town["scans"], lower_town["yellow"], lower_town["red"]) == (
        "2026-07-20T06:00:00.000Z", 3, 1, 1)

    alerts = run.records("alerts")
    garage = [(a["msg_type"], a["info"][0]["response_type"]) for a in alerts
              if a["info"][0]["event"] == "Underground car park closure"]
    assert garage == [("Alert", "Execute"), ("Update", "AllClear"), ("Cancel", "AllClear")]
    evacuation = [a for a in alerts if a["info"][0]["event"] == "Flood evacuation"]
    assert [(a["msg_type"], a["info"][0]["response_type"]) for a in evacuation] == [
        ("Alert", "Evacuate"), ("Update", "AllClear"), ("Cancel", "AllClear")]
    assert dict(evacuation[0]["info"][0]["parameters"])["shelter_id"] == "Z2-SHELTER"
    assert evacuation[1]["references"] == f"{evacuation[0]['sender']},{evacuation[0]['identifier']},{evacuation[0]['sent']}"
    for doc in run.raw_records("alerts_cap"):
        assert XSD.validate(etree.fromstring(doc)), XSD.error_log

    (bill,) = run.records("bills")
    assert (bill["lot_id"], bill["plate_token"], bill["billed_units"], bill["amount_cny"]) == ("Z1-UG", plate["P2"], 2, 10.0)
    assert sorted((a["lot_id"], a["kind"]) for a in run.records("parking_anomalies")) == [
        ("Z1-SURF", "exit_without_entry"), ("Z1-UG", "duplicate")]
    lots = run.merged("parking", "lots")
    assert (lots["Z1-UG"]["occupiedSpotNumber"], lots["Z1-UG"]["status"]) == (2, "spacesAvailable")  # reopened
    assert lots["Z1-SURF"]["occupiedSpotNumber"] == 1 and lots["Z2-UG"]["occupiedSpotNumber"] == 1

    (dead,) = run.records("dead_letters")
    assert "colour" in dead["reason"] and dead["key"] == "[withheld: personal identifier]"

    assert_no_raw_identifiers(run, [*PEOPLE.values(), *PLATES.values(), STRAY_PLATE])


def test_a_shelter_that_fills_mid_evacuation_sends_those_still_on_their_way_to_the_next(city_run):
    run = city_run()
    tokens = Keyring(run.settings.privacy_keys)
    person = {name: tokens.token("person_id", raw) for name, raw in PEOPLE.items()}
    ridge = Zone("Z3", "Ridge", [(30.24, 120.10), (30.24, 120.12), (30.26, 120.12), (30.26, 120.10), (30.24, 120.10)])
    small = [v if v.venue_id != "Z2-SHELTER" else Venue("Z2-SHELTER", "Hill Town gym", "Z2", "shelter", 1, 30.235, 120.115)
             for v in VENUES] + [Venue("Z3-SHELTER", "Ridge hall", "Z3", "shelter", 400, 30.25, 120.11)]
    run.publish([("zones", z.zone_id, z) for z in (LOW, HILL, ridge)] + [("venues", v.venue_id, v) for v in small]
                + [("gauges", "G1", RainGauge("G1", "Z1", 30.21, 120.11))])
    run.start_worker()
    run.publish(registrations())
    run.wait_quiet(stages=ALL_STAGES)
    run.publish([scan("C", "Z1-SHOP", 7), scan("E", "Z1-SHOP", 8)])
    run.wait_quiet(stages=ALL_STAGES)
    run.publish([rain(150, 60.0), rain(160, 50.0)])  # red: Lower Town is evacuated to the gym, room for one
    run.wait_quiet(stages=ALL_STAGES)
    run.publish([scan("A", "Z2-SHELTER", 175)])  # A takes the last place
    run.wait_quiet(stages=ALL_STAGES)

    notices = run.records("notices")
    told = {n["to"]: n["shelter_id"] for n in notices if n["kind"] == "evacuate"}
    assert told == {person[n]: "Z2-SHELTER" for n in "ABCE"}  # registered or last seen in Lower Town
    sent_on = sorted((n["to"], n["shelter_id"]) for n in notices if n["kind"] == "shelter_changed")
    assert sent_on == sorted((person[n], "Z3-SHELTER") for n in "BCE")  # A is there already
    evacuation = [a for a in run.records("alerts") if a["info"][0]["event"] == "Flood evacuation"]
    assert [(a["msg_type"], dict(a["info"][0]["parameters"])["shelter_id"]) for a in evacuation] == [
        ("Alert", "Z2-SHELTER"), ("Update", "Z3-SHELTER")]
    assert run.merged("evacuation", "shelters")["Z2-SHELTER"]["occupancy"] == 1
    assert run.merged("flood_zones", "zones")["Z1"]["shelter_id"] == "Z3-SHELTER"


def assert_no_raw_identifiers(run, raw_values: list[str]) -> None:
    """Past the ingestion topics, no topic, Redis key or value, or worker log holds a raw identifier."""
    from streams.topics import SPECS

    needles = [v.encode() for v in raw_values]
    ingestion = {role for role, spec in SPECS.items() if spec.personal}
    places: list[tuple[str, bytes]] = []
    for role, spec in SPECS.items():
        if role not in ingestion and not spec.compacted:
            places += [(f"topic {spec.name}", value) for value in run.raw_records(role)]
    for key, value in run.state().items():
        if isinstance(value, dict):
            value = b" ".join(k + b"=" + v for k, v in value.items())
        elif isinstance(value, list):
            value = b" ".join(member for member, _ in value)
        places.append((f"redis {key}", key.encode() + b" " + value))
    for i in range(len(run.workers)):
        places.append((f"worker log {i}", (run.tmp / f"worker-{i}.log").read_bytes()))
    assert len(places) > 50
    leaks = [(where, needle.decode()) for where, blob in places for needle in needles if needle in blob]
    assert leaks == []
