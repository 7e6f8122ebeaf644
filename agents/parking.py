"""Car parks: occupancy from the barriers' plate readers (or from the counts a lot publishes),
FIWARE OffStreetParking status, minutes until full, leave-first-pay-later bills, lot alerts, and
lots closed when their zone floods.

  parking.events (by lot) + parking.occupancy, parking.lot_orders (read alongside) -> parking
      -> per lot: occupancy, status, minutes to full (Redis); bills; anomalies;
         almost-full and full alerts; "move your vehicle" notices when a flood closes the lot

Occupancy is the number of open stays, so no dirty event can take it below zero; a duplicate,
an exit without its entry, a second entry of a parked car or a car over capacity is counted and
reported as an anomaly, never applied blindly. Plates are tokens from the moment they are read.
A lot that publishes its counts instead (`parking.occupancy`) is counted by its latest one, and
the changes between counts are its arrivals and departures.
"""

from __future__ import annotations

import logging
import math
from collections import Counter as Tally
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from agents.alerts import send_alert, send_notice
from schemas.cap import Alert, Incident, MsgType, bilingual, cap_id, circle_area
from schemas.contract import Rejected, iso
from schemas.events import LotOccupancy, ParkingEvent
from schemas.records import Bill, LotOrder, Notice, ParkingAnomaly, ParkingAnomalyKind
from schemas.reference import Lot
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import GroupedTable, Table

log = logging.getLogger(__name__)

Status = Literal["spacesAvailable", "almostFull", "full", "closed"]

# ---------------------------------------------------------------------------------------------
# Rules (pure)


@dataclass(frozen=True, slots=True)
class Stay:
    """A vehicle in a car park: when it came in, and the entry event that says so."""

    entry_at: float
    event_id: str


@dataclass(frozen=True, slots=True)
class LotWatch:
    """What the city brain remembers of one car park besides the stays in it."""

    # Kept in place, one of each per lot, and pruned every eighth of their period of event time
    # (never copied per event: a busy lot sees thousands of events an hour); they are read with
    # the period's condition, so what is left between prunes changes nothing.
    seen: dict[str, float] = field(default_factory=dict)  # recent event ids -> event time, to drop duplicates
    arrivals: list[float] = field(default_factory=list)  # entry times within the rate window
    departures: list[float] = field(default_factory=list)  # exit times within the rate window
    clock: float | None = None  # the newest event time at the lot
    level: str | None = None  # almostFull or full, while alerting
    incident: Incident | None = None
    closed_by: str | None = None  # the flood order that closed the lot to entry
    anomalies: dict[str, int] = field(default_factory=dict)
    counted: tuple[float, int] | None = None  # the lot's latest published count: (time, vehicles in it)


def occupied(watch: LotWatch, stays: Mapping[str, Stay]) -> int:
    """Vehicles in the lot: its published count where it publishes one, otherwise its open stays."""
    return watch.counted[1] if watch.counted is not None else len(stays)


def apply_count(watch: LotWatch, count: LotOccupancy, lot: Lot) -> LotWatch | None:
    """Fold a published count into the lot, the change since the last one as arrivals or
    departures at its time; None for a count no newer than the lot's latest (resent or late)."""
    if watch.counted is not None and count.event_time <= watch.counted[0]:
        return None
    if count.occupied_spots is not None:
        vehicles = min(count.occupied_spots, lot.capacity)
    elif count.available_spots is not None:
        vehicles = max(0, lot.capacity - count.available_spots)
    else:
        raise Rejected("a count with neither available_spots nor occupied_spots")
    if watch.counted is not None:
        change = vehicles - watch.counted[1]
        (watch.arrivals if change > 0 else watch.departures).extend([count.event_time] * abs(change))
    clock = max(count.event_time, watch.clock if watch.clock is not None else count.event_time)
    return replace(watch, clock=clock, counted=(count.event_time, vehicles))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one barrier event did: the lot after it, the stay it opened or closed, and what to report."""

    watch: LotWatch
    stay: tuple[str, Stay | None] | None = None  # (plate token, the new stay or None once it ended)
    bill: Bill | None = None
    anomalies: tuple[ParkingAnomalyKind, ...] = ()


def bill_for(stay: Stay, exit_at: float, plate_token: str, lot: Lot, s: Settings) -> Bill:
    """The bill of a stay: free for `parking_free_s`, then the lot's tariff per started unit."""
    duration = exit_at - stay.entry_at
    units = math.ceil(max(0.0, duration - s.parking.free_s) / s.parking.billing_unit_s)
    amount = round(units * lot.tariff_per_hour_cny * s.parking.billing_unit_s / 3600.0, 2)
    return Bill(f"{lot.lot_id}.{stay.event_id}", lot.lot_id, plate_token, stay.entry_at, exit_at, duration, units,
                lot.tariff_per_hour_cny, amount)


def apply_event(watch: LotWatch, stays: Mapping[str, Stay], e: ParkingEvent, lot: Lot, s: Settings) -> Outcome:
    """Fold one entry or exit into the lot; `stays` maps plate tokens to open stays and is not changed."""
    if is_duplicate(watch, e.event_id, s):
        return Outcome(watch, anomalies=("duplicate",))
    clock = max(e.event_time, watch.clock if watch.clock is not None else e.event_time)
    seen = watch.seen
    if crossed(watch.clock, clock, s.parking.dedupe_s):
        for event_id in [k for k, t in seen.items() if t <= clock - s.parking.dedupe_s]:
            del seen[event_id]
    seen.pop(e.event_id, None)  # the newest id goes last
    seen[e.event_id] = e.event_time
    watch = replace(watch, clock=clock)
    if e.direction == "entry":
        stay = stays.get(e.plate)
        anomalies: list[ParkingAnomalyKind] = []
        if watch.closed_by is not None:
            anomalies.append("entry_while_closed")
        if stay is not None:
            anomalies.append("entry_while_parked")  # its exit was never read; the earlier stay is not billed
        elif len(stays) >= lot.capacity:
            anomalies.append("over_capacity")
        watch.arrivals.append(e.event_time)
        return Outcome(watch, (e.plate, Stay(e.event_time, e.event_id)), None, tuple(anomalies))
    # A car that came in before a key rotation is parked under its token of the older key.
    held = next((t for t in (e.plate, *getattr(e.plate, "earlier", ())) if t in stays), None)
    if held is None:
        return Outcome(watch, anomalies=("exit_without_entry",))
    stay = stays[held]
    watch.departures.append(e.event_time)
    if e.event_time < stay.entry_at:
        return Outcome(watch, (held, None), None, ("exit_before_entry",))
    return Outcome(watch, (held, None), bill_for(stay, e.event_time, e.plate, lot, s))


def is_duplicate(watch: LotWatch, event_id: str, s: Settings) -> bool:
    """An id seen within `parking_dedupe_s` of the lot's clock, or the one just before."""
    t = watch.seen.get(event_id)
    if t is None or watch.clock is None:
        return False
    return t > watch.clock - s.parking.dedupe_s or event_id == next(reversed(watch.seen))


def crossed(before: float | None, now: float, period_s: float) -> bool:
    """Whether the clock moved into another eighth of `period_s`: time to prune what expired."""
    return before is not None and before // (period_s / 8) != now // (period_s / 8)


def recent(times: list[float], now: float, s: Settings) -> list[float]:
    return [t for t in times if t > now - s.parking.rate_window_s]


def minutes_to_full(watch: LotWatch, occupied: int, lot: Lot, s: Settings) -> float | None:
    """At the net arrival rate of the last `parking_rate_window_s`, minutes until no space is left;
    None when the lot is not filling."""
    if occupied >= lot.capacity:
        return 0.0
    if watch.clock is None:
        return None
    net = len(recent(watch.arrivals, watch.clock, s)) - len(recent(watch.departures, watch.clock, s))
    if net <= 0:
        return None
    return round((lot.capacity - occupied) / (net / (s.parking.rate_window_s / 60.0)), 1)


def lot_status(occupied: int, lot: Lot, closed: bool, s: Settings) -> Status:
    if closed:
        return "closed"
    if occupied >= lot.capacity:
        return "full"
    return "almostFull" if occupied / lot.capacity >= s.parking.almost_full else "spacesAvailable"


def step_lot_alert(watch: LotWatch, occupied: int, at: float, lot: Lot, s: Settings) -> tuple[LotWatch, Alert | None]:
    """Almost full at `parking_almost_full`, full at capacity; back to almost full under
    `parking_almost_full`, cleared under `parking_clear`, so a lot hovering at a line does not flap."""
    ratio = occupied / lot.capacity
    if watch.level is None:
        if ratio < s.parking.almost_full:
            return watch, None
        level = "full" if occupied >= lot.capacity else "almostFull"
        watch = replace(watch, level=level, incident=Incident(cap_id(f"parking.{lot.lot_id}.{int(at)}")))
        return _lot_message(watch, "Alert", occupied, at, lot, s)
    if ratio < s.parking.clear:
        watch, alert = _lot_message(replace(watch, level=None), "Cancel", occupied, at, lot, s)
        return replace(watch, incident=None), alert
    if watch.level == "almostFull" and occupied >= lot.capacity:
        return _lot_message(replace(watch, level="full"), "Update", occupied, at, lot, s)
    if watch.level == "full" and ratio < s.parking.almost_full:
        return _lot_message(replace(watch, level="almostFull"), "Update", occupied, at, lot, s)
    return watch, None


def _lot_message(watch: LotWatch, msg_type: MsgType, occupied: int, at: float, lot: Lot, s: Settings) -> tuple[LotWatch, Alert]:
    free = max(0, lot.capacity - occupied)
    if watch.level is None:
        texts = {"zh-CN": (f"{lot.name}车位已恢复", f"{lot.name}尚有{free}个空位。", "可正常前往停车。"),
                 "en-US": (f"Spaces again at {lot.name}", f"{lot.name} has {free} free spaces.", "Park as usual.")}
    elif watch.level == "full":
        texts = {"zh-CN": (f"{lot.name}车位已满", f"{lot.name}共{lot.capacity}个车位，已全部停满。", "请前往附近其他停车场。"),
                 "en-US": (f"{lot.name} is full", f"All {lot.capacity} spaces at {lot.name} are taken.",
                           "Head for another car park nearby.")}
    else:
        texts = {"zh-CN": (f"{lot.name}车位紧张", f"{lot.name}仅剩{free}个空位。", "建议前往附近其他停车场。"),
                 "en-US": (f"{lot.name} is almost full", f"Only {free} of {lot.capacity} spaces are left at {lot.name}.",
                           "Consider another car park nearby.")}
    cleared = watch.level is None
    info = bilingual(texts, "Transport", "Car park occupancy", "AllClear" if cleared else "Avoid",
                     "Past" if cleared else "Expected", "Moderate" if watch.level == "full" else "Minor", "Observed",
                     [("lot_id", lot.lot_id), ("zone_id", lot.zone_id), ("status", watch.level or "spacesAvailable"),
                      ("available_spots", str(free))],
                     [circle_area(lot.name, lot.lat, lot.lon, 0.2)])
    assert watch.incident is not None  # opened with its first message
    incident, alert = watch.incident.message(s.cap, msg_type, at, info)
    return replace(watch, incident=incident), alert


def move_vehicle_notice(order_id: str, at: float, plate_token: str, lot: Lot) -> Notice:
    """Tell the owner of a car parked in a lot a flood has closed to drive it out."""
    return Notice(
        f"{order_id}.{plate_token}", plate_token, "plate", "move_vehicle", at, lot.zone_id,
        [("zh-CN", f"{lot.name}所在区域有内涝风险，地下车库已停止进入，请尽快将车辆驶离至地势较高处。"),
         ("en-US", f"Flood risk around {lot.name}: the underground car park is closed to entry. "
                   "Move your vehicle to higher ground now.")],
        lot_id=lot.lot_id, order_id=order_id,
    )


# ---------------------------------------------------------------------------------------------
# Stage


class ParkingStage(Stage):
    """Per car park: its stays, occupancy and status, bills, anomalies and alerts."""

    name = "parking"
    source = "parking_events"
    contract = ParkingEvent
    alongside = {"parking_occupancy": LotOccupancy, "lot_orders": LotOrder}
    watch = Table(LotWatch)  # by lot; written after every event at the lot (its lists change in place)
    stays = GroupedTable(Stay)  # by (lot, plate token): the open stays
    lots = Table(dict, restored=False)  # the live view of each lot

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        # Per lot, no stay becomes a missed exit before this event time (a lower bound, so that
        # the stays are not all looked at on every event).
        self.no_missed_exit_before: dict[str, float] = {}

    def knows(self, e: ParkingEvent | LotOccupancy | LotOrder) -> bool:
        return e.lot_id in self.reference.city.lots

    def on_event(self, e: ParkingEvent | LotOccupancy | LotOrder, source: Source, effects: Effects) -> None:
        lot = self.reference.city.lots.get(e.lot_id)
        if lot is None:
            raise Rejected(f"unknown lot_id {e.lot_id!r}: not in the car parks reference", "unknown_reference")
        watch, stays = self.watch.get(lot.lot_id, LotWatch()), self.stays.group(lot.lot_id)
        if isinstance(e, LotOccupancy):
            counted = apply_count(watch, e, lot)
            if counted is None:
                assert watch.counted is not None
                effects.late(source, f"late: lot {lot.lot_id} has a count of {iso(watch.counted[0])} already")
                return
            self.watch[lot.lot_id] = counted
            self.settle(lot, watch.clock, effects)
            return
        if isinstance(e, LotOrder):
            self.on_order(e, watch, stays, lot, effects)
            self.settle(lot, watch.clock, effects)
            return
        outcome = apply_event(watch, stays, e, lot, self.settings)
        self.watch[lot.lot_id] = outcome.watch
        for kind in outcome.anomalies:
            log.warning("parking anomaly %s at %s: event %s, %s[%d]@%d", kind, e.lot_id, e.event_id,
                        source.topic, source.partition, source.offset,
                        extra={"topic": source.topic, "partition": source.partition, "offset": source.offset})
            self.report(ParkingAnomaly(lot.lot_id, kind, e.event_id, e.event_time), effects)
        if outcome.stay is not None:
            token, stay = outcome.stay
            if stay is None:
                self.stays.pop((lot.lot_id, token), None)
            else:
                self.stays[lot.lot_id, token] = stay
                self.no_missed_exit_before[lot.lot_id] = min(self.no_missed_exit_before.get(lot.lot_id, math.inf),
                                                             stay.entry_at + self.settings.parking.stay_max_s)
                if outcome.watch.closed_by is not None:
                    send_notice(move_vehicle_notice(outcome.watch.closed_by, e.event_time, token, lot), effects)
        if outcome.bill is not None:
            metrics.BILLS.inc()
            effects.send(topics.bills, lot.lot_id, outcome.bill)
        self.settle(lot, watch.clock, effects)

    def settle(self, lot: Lot, before: float | None, effects: Effects) -> None:
        """After every event, the rules that follow the lot's clock: stays past
        `parking_stay_max_s` are exits the reader missed (they stop counting), arrival and
        departure rates keep the last window, and the almost-full and full alert steps."""
        s, lot_id = self.settings, lot.lot_id
        watch = self.watch.setdefault(lot_id, LotWatch())
        clock = watch.clock
        if clock is None:
            return
        if clock > self.no_missed_exit_before.get(lot_id, -math.inf):
            oldest = clock - s.parking.stay_max_s
            missed = sorted(t for t, stay in self.stays.group(lot_id).items() if stay.entry_at < oldest)
            for token in missed:
                self.report(ParkingAnomaly(lot_id, "missed_exit", self.stays.pop((lot_id, token)).event_id, clock), effects)
            self.no_missed_exit_before[lot_id] = min((stay.entry_at for stay in self.stays.group(lot_id).values()),
                                                     default=math.inf) + s.parking.stay_max_s
            watch = self.watch[lot_id]
        if crossed(before, clock, s.parking.rate_window_s):
            watch.arrivals[:] = recent(watch.arrivals, clock, s)
            watch.departures[:] = recent(watch.departures, clock, s)
        watch, alert = step_lot_alert(watch, occupied(watch, self.stays.group(lot_id)), clock, lot, s)
        if alert is not None:
            send_alert(alert, effects)
        self.watch[lot_id] = watch

    def gauges(self) -> metrics.Gauges:
        lots = self.reference.city.lots
        statuses = Tally((lot_status(occupied(w, self.stays.group(lot_id)), lots[lot_id], w.closed_by is not None,
                                     self.settings),) for lot_id, w in self.watch.items() if lot_id in lots)
        return metrics.merge({"citybrain_lots": statuses},
                             metrics.gauge("citybrain_active_incidents", sum(1 for w in self.watch.values() if w.incident),
                                           "Transport"))

    def on_order(self, order: LotOrder, watch: LotWatch, stays: Mapping[str, Stay], lot: Lot, effects: Effects) -> None:
        if order.closed and watch.closed_by != order.order_id:
            self.watch[lot.lot_id] = replace(watch, closed_by=order.order_id)
            for token in sorted(stays):
                send_notice(move_vehicle_notice(order.order_id, order.at, token, lot), effects)
        elif not order.closed and watch.closed_by is not None:
            self.watch[lot.lot_id] = replace(watch, closed_by=None)

    def report(self, anomaly: ParkingAnomaly, effects: Effects) -> None:
        """Count an anomaly on the lot and in the metrics, and send it on."""
        metrics.PARKING_ANOMALIES.labels(anomaly.kind).inc()
        w = self.watch[anomaly.lot_id]
        self.watch[anomaly.lot_id] = replace(w, anomalies={**w.anomalies, anomaly.kind: w.anomalies.get(anomaly.kind, 0) + 1})
        effects.send(topics.parking_anomalies, anomaly.lot_id, anomaly)

    def flush(self, effects: Effects) -> None:
        for lot_id in self.watch.dirty():
            watch = self.watch[lot_id]
            self.lots[lot_id] = lot_view(self.reference.city.lots[lot_id], watch, occupied(watch, self.stays.group(lot_id)),
                                         self.settings)


def lot_view(lot: Lot, watch: LotWatch, occupied: int, s: Settings) -> dict:
    """The live record of a car park, named as FIWARE OffStreetParking names it."""
    return {
        "lot_id": lot.lot_id, "zone_id": lot.zone_id, "underground": lot.underground,
        "totalSpotNumber": lot.capacity, "occupiedSpotNumber": occupied,
        "availableSpotNumber": max(0, lot.capacity - occupied), "occupancy": round(min(1.0, occupied / lot.capacity), 4),
        "status": lot_status(occupied, lot, watch.closed_by is not None, s),
        "minutes_to_full": minutes_to_full(watch, occupied, lot, s), "closed_by": watch.closed_by,
        "anomalies": watch.anomalies, "updated": iso(watch.clock) if watch.clock is not None else None,
    }


runtime.stage(ParkingStage)
