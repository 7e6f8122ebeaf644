"""Workers killed with SIGKILL while bills are being made and while an evacuation fans out: after
a restart every bill and notice exists exactly once by id (a resend repeats the same record), none
is lost, and nothing downstream holds a raw identifier."""

from __future__ import annotations

import time

import pytest

from schemas.contract import parse_time
from schemas.events import HealthCodeScan, HealthCodeStatusChange, ParkingEvent, RainGaugeReading
from schemas.reference import Lot, RainGauge, Venue
from tests.integration.test_evacuation import ALL_STAGES, HILL, LOW, assert_no_raw_identifiers
from tests.integration.test_restart import unique

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-21T06:00:00Z")
VENUES = [Venue("Z1-SHOP", "Riverside market", "Z1", "shop", 0, 30.21, 120.11),
          Venue("Z2-SHOP", "Hill Town mall", "Z2", "shop", 0, 30.23, 120.11),
          Venue("Z2-SHELTER", "Hill Town gym", "Z2", "shelter", 5000, 30.235, 120.115)]
LOTS = [Lot("Z1-UG", "Riverside underground car park", "Z1", 2000, True, 6.0, 30.21, 120.11),
        Lot("Z2-UG", "Hill Town underground car park", "Z2", 2000, True, 6.0, 30.23, 120.11)]
PEOPLE = {f"33010619800101{i:04d}": ("Z1" if i < 1500 else "Z2") for i in range(2000)}
COLOURS = {pid: "red" if i % 10 == 0 else "yellow" if i % 10 in (1, 2) else "green" for i, pid in enumerate(PEOPLE)}
CARS = {f"浙A{i:05d}": ("Z1-UG" if i < 1200 else "Z2-UG") for i in range(1600)}
LEAVING = {plate for i, plate in enumerate(CARS) if i % 3 == 0}  # a third leave, and are billed


def statuses():
    return [("health_status", pid, HealthCodeStatusChange(pid, COLOURS[pid], T0, None, zone)) for pid, zone in PEOPLE.items()]


def scans_and_parking():
    items = []
    for k in range(2):
        for i, (pid, zone) in enumerate(PEOPLE.items()):
            venue = f"{zone}-SHOP"
            items.append(("health_scans", venue, HealthCodeScan(f"s{k}-{i}", pid, venue, T0 + 600 + 1800 * k + i % 900)))
    for i, (plate, lot) in enumerate(CARS.items()):
        items.append(("parking_events", lot, ParkingEvent(f"in-{i}", lot, plate, "entry", T0 + i)))
    for i, (plate, lot) in enumerate(CARS.items()):
        if plate in LEAVING:
            items.append(("parking_events", lot, ParkingEvent(f"out-{i}", lot, plate, "exit", T0 + 7200 + i)))
    return items


def kill_when(run, worker, ready, timeout: float = 120.0) -> bool:
    """SIGKILL the worker as soon as `ready()`; whether it was still busy then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ready():
        time.sleep(0.02)
    run.kill_worker(worker)
    return time.monotonic() < deadline


def test_sigkill_while_billing_and_evacuating_loses_nothing_and_repeats_nothing(city_run):
    run = city_run()
    run.publish([("zones", z.zone_id, z) for z in (LOW, HILL)] + [("venues", v.venue_id, v) for v in VENUES]
                + [("lots", lot.lot_id, lot) for lot in LOTS] + [("gauges", "G1", RainGauge("G1", "Z1", 30.21, 120.11))])
    run.start_worker()
    run.publish(statuses())
    run.wait_quiet(stages=ALL_STAGES)

    # Killed while scans are being checked and stays billed.
    worker = run.start_worker()
    publishing = run.publish_in_background(scans_and_parking())
    total_scans = 2 * len(PEOPLE)
    scans_done = lambda: sum(o + 1 for o in run.applied_offsets("health_intake", 4).values())  # noqa: E731
    assert kill_when(run, worker, lambda: scans_done() >= 0.4 * total_scans)
    assert scans_done() < total_scans, "the kill must land in the middle of the scans"
    publishing.join()
    run.start_worker()
    run.wait_quiet(stages=ALL_STAGES)

    # Killed while the evacuation notices fan out.
    notices_before = sum(run.end_offsets("notices").values())
    worker = run.workers[-1]
    run.publish([("rain_readings", "G1", RainGaugeReading("G1", T0 + 3 * 3600, 110.0, 600.0))])
    assert kill_when(run, worker, lambda: sum(run.end_offsets("notices").values()) > notices_before)
    run.start_worker()
    run.wait_quiet(stages=ALL_STAGES)

    by_id = lambda n: n["notice_id"]  # noqa: E731
    records = run.records("notices")
    notices = unique(records, by_id)  # a resent notice is the same record
    print(f"notices: {len(records)} records, {len(notices)} distinct")
    kinds: dict[str, set[str]] = {}
    for n in notices.values():
        kinds.setdefault(n["kind"], set()).add(n["to"] if n["to_kind"] != "venue" else n["scan_id"])
    risky_scans = {f"s{k}-{i}" for k in range(2) for i, pid in enumerate(PEOPLE) if COLOURS[pid] != "green"}
    assert kinds.get("deny_entry", set()) | kinds.get("check_entry", set()) == risky_scans
    assert len(kinds["evacuate"]) == sum(1 for zone in PEOPLE.values() if zone == "Z1")
    assert len(kinds["move_vehicle"]) == sum(1 for plate, lot in CARS.items() if lot == "Z1-UG" and plate not in LEAVING)

    bills = unique(run.records("bills"), lambda b: b["bill_id"])
    expected = {f"{lot}.in-{i}" for i, (plate, lot) in enumerate(CARS.items()) if plate in LEAVING}
    assert set(bills) == expected
    # 7200 s stays: 15 minutes free, then two started hours at 6 CNY.
    assert {(b["billed_units"], b["amount_cny"]) for b in bills.values()} == {(2, 12.0)}

    lots = run.merged("parking", "lots")
    assert lots["Z1-UG"]["occupiedSpotNumber"] == 1200 - sum(1 for p, lot in CARS.items() if lot == "Z1-UG" and p in LEAVING)
    assert lots["Z1-UG"]["status"] == "closed" and lots["Z2-UG"]["status"] == "spacesAvailable"
    assert run.merged("evacuation", "zones")["Z1"]["told_to_evacuate"] == 1500
    assert len(run.merged("people", "people")) == len(PEOPLE)
    assert run.records("dead_letters") == [] and run.records("parking_anomalies") == []

    assert_no_raw_identifiers(run, [*PEOPLE, *CARS])
