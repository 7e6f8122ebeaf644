"""Parking rules: dirty barrier events, bills, minutes until full, FIWARE status, lot alerts."""

from dataclasses import replace

import pytest

from agents.parking import LotWatch, Stay, apply_event, bill_for, lot_status, minutes_to_full, step_lot_alert
from schemas.cap import reference_to
from schemas.events import ParkingEvent
from schemas.reference import Lot
from streams.privacy import Keyring
from streams.settings import Settings

S = Settings()
HOUR, MINUTE = 3600.0, 60.0
T0 = 1_780_000_000.0  # some time in 2026
LOT = Lot("L1", "Wulin Square garage", "Z1", 100, True, 5.0, 30.27, 120.16)


def lot(capacity=100, tariff=5.0):
    return replace(LOT, capacity=capacity, tariff_per_hour_cny=tariff)


def event(event_id, direction, at, plate="tok-A"):
    return ParkingEvent(event_id, "L1", plate, direction, at)


def entry(event_id, at, plate="tok-A"):
    return event(event_id, "entry", at, plate)


def exit_(event_id, at, plate="tok-A"):
    return event(event_id, "exit", at, plate)


def parked(n, at=T0):
    """n cars already in the lot, plates tok-0..tok-(n-1)."""
    return {f"tok-{i}": Stay(at, f"e{i}") for i in range(n)}


# ---------------------------------------------------------------------------------------------
# apply_event


def test_a_normal_entry_opens_a_stay_and_reports_nothing():
    out = apply_event(LotWatch(), {}, entry("e1", T0), LOT, S)
    assert out.stay == ("tok-A", Stay(T0, "e1"))
    assert out.bill is None and out.anomalies == ()
    assert out.watch.arrivals == [T0] and out.watch.clock == T0


def test_a_normal_exit_closes_the_stay_and_bills_it():
    stays = {"tok-A": Stay(T0, "e1")}
    out = apply_event(LotWatch(clock=T0), stays, exit_("e2", T0 + 2 * HOUR + 10 * MINUTE), LOT, S)
    assert out.stay == ("tok-A", None)
    assert out.anomalies == ()
    # 2 h 10 min, 15 min free -> 1 h 55 min billed in started hours: 2 units at 5 CNY/h.
    assert out.bill.billed_units == 2 and out.bill.amount_cny == 10.0
    assert out.bill.plate_token == "tok-A" and out.bill.lot_id == "L1"
    assert (out.bill.entry_at, out.bill.exit_at) == (T0, T0 + 2 * HOUR + 10 * MINUTE)
    assert out.watch.departures == [T0 + 2 * HOUR + 10 * MINUTE]


def test_apply_event_does_not_change_the_stays_it_is_given():
    stays = {"tok-A": Stay(T0, "e1")}
    apply_event(LotWatch(), stays, exit_("e2", T0 + HOUR), LOT, S)
    apply_event(LotWatch(), stays, entry("e3", T0 + HOUR, plate="tok-B"), LOT, S)
    assert stays == {"tok-A": Stay(T0, "e1")}


def test_a_duplicate_event_id_is_an_anomaly_and_changes_nothing():
    first = apply_event(LotWatch(), {}, entry("e1", T0), LOT, S)
    again = apply_event(first.watch, {"tok-A": Stay(T0, "e1")}, entry("e1", T0), LOT, S)
    assert again.anomalies == ("duplicate",)
    assert again.stay is None and again.bill is None
    assert again.watch == first.watch


def test_a_duplicate_exit_does_not_bill_twice():
    opened = apply_event(LotWatch(), {}, entry("e1", T0), LOT, S)
    closed = apply_event(opened.watch, {"tok-A": Stay(T0, "e1")}, exit_("e2", T0 + HOUR), LOT, S)
    assert closed.bill is not None
    again = apply_event(closed.watch, {}, exit_("e2", T0 + HOUR), LOT, S)
    assert again.anomalies == ("duplicate",) and again.bill is None


def test_an_event_id_is_forgotten_after_the_dedupe_period():
    opened = apply_event(LotWatch(), {}, entry("e1", T0), LOT, S)
    later = apply_event(opened.watch, {"tok-A": Stay(T0, "e1")}, exit_("e2", T0 + S.parking.dedupe_s + 1), LOT, S)
    assert "e1" not in later.watch.seen and "e2" in later.watch.seen


def test_exit_without_entry_is_an_anomaly_not_a_bill():
    out = apply_event(LotWatch(), {}, exit_("e9", T0), LOT, S)
    assert out.anomalies == ("exit_without_entry",)
    assert out.bill is None and out.stay is None
    assert out.watch.departures == []  # occupancy cannot go below zero


def test_entry_while_parked_is_an_anomaly_and_restarts_the_stay():
    stays = {"tok-A": Stay(T0, "e1")}
    out = apply_event(LotWatch(clock=T0), stays, entry("e2", T0 + HOUR), LOT, S)
    assert out.anomalies == ("entry_while_parked",)
    assert out.stay == ("tok-A", Stay(T0 + HOUR, "e2"))  # the same plate: still one stay, not two
    assert out.bill is None


def test_an_entry_over_capacity_is_an_anomaly():
    small = lot(capacity=3)
    out = apply_event(LotWatch(), parked(3), entry("e9", T0), small, S)
    assert out.anomalies == ("over_capacity",)
    assert out.stay == ("tok-A", Stay(T0, "e9"))  # the car is in, whatever the count said


def test_the_last_free_space_is_not_over_capacity():
    out = apply_event(LotWatch(), parked(2), entry("e9", T0), lot(capacity=3), S)
    assert out.anomalies == ()


def test_an_entry_while_the_lot_is_closed_is_an_anomaly():
    out = apply_event(LotWatch(closed_by="garages.Z1.1"), {}, entry("e1", T0), LOT, S)
    assert out.anomalies == ("entry_while_closed",)
    assert out.stay == ("tok-A", Stay(T0, "e1"))


def test_an_exit_is_allowed_while_the_lot_is_closed():
    out = apply_event(LotWatch(closed_by="garages.Z1.1"), {"tok-A": Stay(T0, "e1")}, exit_("e2", T0 + HOUR), LOT, S)
    assert out.anomalies == () and out.bill is not None


def test_exit_before_entry_ends_the_stay_without_a_bill():
    out = apply_event(LotWatch(clock=T0), {"tok-A": Stay(T0, "e1")}, exit_("e2", T0 - 5 * MINUTE), LOT, S)
    assert out.anomalies == ("exit_before_entry",)
    assert out.stay == ("tok-A", None)
    assert out.bill is None


def test_a_late_event_does_not_move_the_clock_back():
    out = apply_event(LotWatch(clock=T0 + HOUR), {}, entry("e1", T0), LOT, S)
    assert out.watch.clock == T0 + HOUR


# ---------------------------------------------------------------------------------------------
# bill_for


def bill(duration_s, lot_=LOT, s=S):
    return bill_for(Stay(T0, "e1"), T0 + duration_s, "tok-A", lot_, s)


def test_a_stay_within_the_free_period_costs_nothing():
    b = bill(10 * MINUTE)
    assert (b.billed_units, b.amount_cny) == (0, 0.0)
    assert b.duration_s == 10 * MINUTE


def test_a_stay_of_exactly_the_free_period_costs_nothing():
    b = bill(S.parking.free_s)
    assert (b.billed_units, b.amount_cny) == (0, 0.0)


def test_one_second_past_the_free_period_starts_a_unit():
    b = bill(S.parking.free_s + 1)
    assert (b.billed_units, b.amount_cny) == (1, 5.0)


@pytest.mark.parametrize(
    ("duration_s", "units"),
    [(15 * MINUTE + HOUR, 1),  # exactly one billed hour after the free quarter
     (15 * MINUTE + HOUR + 1, 2),  # a started second hour
     (2 * HOUR + 10 * MINUTE, 2),  # 1 h 55 min billed
     (5 * HOUR, 5)],  # 4 h 45 min billed
)
def test_every_started_unit_after_the_free_period_is_billed(duration_s, units):
    b = bill(duration_s)
    assert b.billed_units == units
    assert b.amount_cny == pytest.approx(units * 5.0)


def test_a_half_hour_billing_unit_bills_half_the_hourly_tariff_per_unit():
    s = Settings.of(parking_billing_unit_s=1800.0)
    # 2 h 10 min - 15 min free = 1 h 55 min = 3.83 half hours -> 4 units of 2.5 CNY.
    b = bill(2 * HOUR + 10 * MINUTE, s=s)
    assert (b.billed_units, b.amount_cny) == (4, 10.0)
    # 1 h - 15 min = 45 min -> 2 half hours.
    b = bill(HOUR, s=s)
    assert (b.billed_units, b.amount_cny) == (2, 5.0)


def test_a_different_free_period_from_settings():
    s = Settings.of(parking_free_s=1800.0)
    assert bill(30 * MINUTE, s=s).billed_units == 0
    assert bill(31 * MINUTE, s=s).billed_units == 1


def test_the_tariff_comes_from_the_lot():
    b = bill(3 * HOUR, lot_=lot(tariff=8.0))  # 2 h 45 min -> 3 started hours
    assert b.tariff_per_hour_cny == 8.0
    assert (b.billed_units, b.amount_cny) == (3, 24.0)


def test_a_free_lot_bills_units_but_no_money():
    b = bill(3 * HOUR, lot_=lot(tariff=0.0))
    assert b.billed_units == 3 and b.amount_cny == 0.0


def test_the_bill_id_names_the_lot_and_the_entry_event():
    b = bill_for(Stay(T0, "entry-42"), T0 + HOUR, "tok-A", LOT, S)
    assert b.bill_id == "L1.entry-42"
    assert b.bill_id == bill_for(Stay(T0, "entry-42"), T0 + HOUR, "tok-A", LOT, S).bill_id


# ---------------------------------------------------------------------------------------------
# minutes_to_full


def test_a_filling_lot_reports_minutes_until_full():
    # 30 arrivals and 0 departures in the last 15 min: 2 cars a minute; 60 free spaces -> 30 min.
    watch = LotWatch(arrivals=[T0 - i * 20.0 for i in range(30)], clock=T0)
    assert minutes_to_full(watch, 40, lot(capacity=100), S) == pytest.approx(30.0)


def test_departures_are_netted_against_arrivals():
    # 30 in, 15 out in 15 min: 1 car a minute net; 60 free spaces -> 60 min.
    watch = LotWatch(arrivals=[T0 - i * 20.0 for i in range(30)], departures=[T0 - i * 40.0 for i in range(15)],
                     clock=T0)
    assert minutes_to_full(watch, 40, lot(capacity=100), S) == pytest.approx(60.0)


def test_a_lot_not_filling_has_no_minutes_to_full():
    balanced = LotWatch(arrivals=[T0 - 60, T0 - 120], departures=[T0 - 30, T0 - 90], clock=T0)
    emptying = LotWatch(arrivals=[T0 - 60], departures=[T0 - 30, T0 - 90], clock=T0)
    assert minutes_to_full(balanced, 40, LOT, S) is None
    assert minutes_to_full(emptying, 40, LOT, S) is None
    assert minutes_to_full(LotWatch(), 40, LOT, S) is None


def test_a_full_lot_is_zero_minutes_from_full():
    assert minutes_to_full(LotWatch(), 100, lot(capacity=100), S) == 0.0
    assert minutes_to_full(LotWatch(clock=T0), 103, lot(capacity=100), S) == 0.0


def test_only_arrivals_within_the_rate_window_count():
    window = S.parking.rate_window_s
    inside = [T0 - i * 60.0 for i in range(15)]  # 15 in the last 15 min: 1 a minute
    outside = [T0 - window - 60.0 * (i + 1) for i in range(45)]  # older: must not count
    watch = LotWatch(arrivals=outside + inside, clock=T0)
    # 50 free spaces at 1 car a minute.
    assert minutes_to_full(watch, 50, lot(capacity=100), S) == pytest.approx(50.0)


def test_a_shorter_rate_window_from_settings():
    s = Settings.of(parking_rate_window_s=300.0)
    watch = LotWatch(arrivals=[T0 - i * 60.0 for i in range(10)], clock=T0)  # 5 within the last 5 min
    # 5 arrivals in 5 minutes: 1 a minute; 20 free spaces -> 20 min.
    assert minutes_to_full(watch, 80, lot(capacity=100), s) == pytest.approx(20.0)


# ---------------------------------------------------------------------------------------------
# lot_status


@pytest.mark.parametrize(
    ("occupied", "closed", "status"),
    [(0, False, "spacesAvailable"), (89, False, "spacesAvailable"), (90, False, "almostFull"), (99, False, "almostFull"),
     (100, False, "full"), (104, False, "full"), (0, True, "closed"), (100, True, "closed")],
)
def test_lot_status_follows_fiware_offstreetparking(occupied, closed, status):
    assert lot_status(occupied, lot(capacity=100), closed, S) == status


def test_the_almost_full_line_comes_from_settings():
    s = Settings.of(parking_almost_full=0.8)
    assert lot_status(79, lot(capacity=100), False, s) == "spacesAvailable"
    assert lot_status(80, lot(capacity=100), False, s) == "almostFull"


# ---------------------------------------------------------------------------------------------
# step_lot_alert


def run_alerts(occupancies, capacity=100, start=T0, watch=None):
    """Step the lot alert through occupancies a minute apart; returns the watch and the messages."""
    watch = watch or LotWatch()
    alerts = []
    for i, occupied in enumerate(occupancies):
        watch, alert = step_lot_alert(watch, occupied, start + i * MINUTE, lot(capacity=capacity), S)
        if alert is not None:
            alerts.append(alert)
    return watch, alerts


def summary(alerts):
    return [(a.msg_type, a.parameter("status")) for a in alerts]


def test_a_lot_under_almost_full_raises_nothing():
    watch, alerts = run_alerts([0, 50, 89])
    assert alerts == [] and watch.level is None and watch.incident is None


def test_almost_full_at_90_percent_raises_an_alert():
    watch, alerts = run_alerts([89, 90])
    assert summary(alerts) == [("Alert", "almostFull")]
    assert alerts[0].references is None
    assert alerts[0].parameter("available_spots") == "10"
    assert watch.level == "almostFull"


def test_reaching_capacity_updates_to_full():
    watch, alerts = run_alerts([90, 95, 100])
    assert summary(alerts) == [("Alert", "almostFull"), ("Update", "full")]
    assert alerts[1].parameter("available_spots") == "0"
    assert watch.level == "full"


def test_a_lot_found_full_raises_full_at_once():
    _, alerts = run_alerts([100])
    assert summary(alerts) == [("Alert", "full")]


def test_a_full_lot_steps_back_to_almost_full_only_under_90_percent():
    _, alerts = run_alerts([100, 95, 90])
    assert summary(alerts) == [("Alert", "full")]
    _, alerts = run_alerts([100, 89])
    assert summary(alerts) == [("Alert", "full"), ("Update", "almostFull")]


def test_under_85_percent_cancels():
    watch, alerts = run_alerts([90, 84])
    assert summary(alerts) == [("Alert", "almostFull"), ("Cancel", "spacesAvailable")]
    assert watch.level is None and watch.incident is None


def test_a_full_lot_emptying_fast_cancels_directly():
    _, alerts = run_alerts([100, 50])
    assert summary(alerts) == [("Alert", "full"), ("Cancel", "spacesAvailable")]


def test_a_lot_hovering_between_85_and_90_percent_does_not_flap():
    _, alerts = run_alerts([90, 86, 89, 85, 90, 87, 91, 85])
    assert summary(alerts) == [("Alert", "almostFull")]


def test_a_lot_hovering_between_85_and_90_percent_does_not_raise():
    _, alerts = run_alerts([86, 89, 85, 88])
    assert alerts == []


def test_the_lines_are_shares_of_capacity():
    # 9 of 10 is 90 %, 8 of 10 is 80 % (< 85 %).
    _, alerts = run_alerts([9, 10, 8], capacity=10)
    assert summary(alerts) == [("Alert", "almostFull"), ("Update", "full"), ("Cancel", "spacesAvailable")]


def test_each_message_references_the_one_before():
    _, alerts = run_alerts([90, 100, 88, 80])
    assert [a.msg_type for a in alerts] == ["Alert", "Update", "Update", "Cancel"]
    assert alerts[0].references is None
    for before, after in zip(alerts, alerts[1:]):
        assert after.references == reference_to(before)
        assert after.references == f"{before.sender},{before.identifier},{before.sent}"
    assert len({a.identifier for a in alerts}) == len(alerts)
    assert len({a.incidents for a in alerts}) == 1  # one incident


def test_messages_are_deterministic_on_replay():
    _, first = run_alerts([90, 100, 80])
    _, second = run_alerts([90, 100, 80])
    assert [(a.identifier, a.sent, a.references) for a in first] == [(a.identifier, a.sent, a.references) for a in second]


def test_a_new_episode_after_a_cancel_is_a_new_incident():
    watch, first = run_alerts([90, 80])
    _, second = run_alerts([92], start=T0 + HOUR, watch=watch)
    assert [a.msg_type for a in second] == ["Alert"]
    assert second[0].references is None
    assert second[0].incidents != first[0].incidents
    assert second[0].identifier not in {a.identifier for a in first}


def test_messages_are_sent_by_the_configured_sender():
    _, alerts = run_alerts([95])
    assert alerts[0].sender == S.cap.sender
    assert alerts[0].parameter("lot_id") == "L1" and alerts[0].parameter("zone_id") == "Z1"


def test_a_car_parked_before_a_key_rotation_is_billed_when_it_leaves_after_it():
    before, after = Keyring(("k1:" + "a" * 32,)), Keyring(("k2:" + "b" * 32, "k1:" + "a" * 32))
    plate = "浙A12345"
    parked_as = before.pseudonymise(entry("e1", T0, plate), ("plate",)).plate
    leaving = after.pseudonymise(exit_("e2", T0 + 2 * HOUR + 10 * MINUTE, plate), ("plate",))
    assert leaving.plate != parked_as and leaving.plate.earlier == (parked_as,)
    out = apply_event(LotWatch(clock=T0), {parked_as: Stay(T0, "e1")}, leaving, LOT, S)
    assert out.stay == (parked_as, None) and out.anomalies == ()
    assert out.bill.plate_token == leaving.plate and out.bill.billed_units == 2


def test_a_lot_that_publishes_its_counts_is_counted_by_them_and_fills_at_their_pace():
    import orjson

    from agents.parking import ParkingStage
    from schemas.events import LotOccupancy
    from schemas.reference import CityMap
    from streams.tools.harness import run_stage

    counts = [LotOccupancy("L1", T0 + 300 * i, available_spots=100 - n) for i, n in enumerate([40, 60, 80, 92])]
    counts += [LotOccupancy("L1", T0 + 300, occupied_spots=10),  # older than the latest: late, not applied
               LotOccupancy("L1", T0 + 1500)]  # says nothing: dead-lettered
    out = run_stage(ParkingStage, [("parking_occupancy", "L1", c) for c in counts], city=CityMap(lots={"L1": LOT}),
                    broker_time=T0 + 3600, settings=S)
    (view,) = [orjson.loads(v) for k, h in out.state.items() if k.endswith(":lots") for v in h.values()]
    assert (view["occupiedSpotNumber"], view["availableSpotNumber"], view["status"]) == (92, 8, "almostFull")
    assert view["minutes_to_full"] is not None  # 52 arrivals in 15 minutes of counts: a lot filling
    raised = [(a["msg_type"], dict(a["info"][0]["parameters"])["status"]) for _, a in out.sent("alerts")]
    assert raised == [("Alert", "almostFull")]
    assert len(out.sent("late_events")) == 1
    (dead,) = out.sent("dead_letters")
    assert "neither available_spots nor occupied_spots" in dead[1]["reason"]
