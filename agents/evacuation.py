"""What a flood sets off in a zone: underground car parks closing with "move your vehicle"
notices, and evacuation orders reaching every person last known to be in the zone.

  flood.zone_levels (one partition)  -> flood_zones       -> per zone: the rain signal and the
      waterlogging levels of its points; at the configured levels, lot orders for its underground
      car parks (with a CAP message to move cars out) and evacuation orders
  people.whereabouts (by zone) + people.evacuation_orders (read alongside) -> evacuation
      -> per zone: who is in it and at which shelter; on an order, a CAP Evacuate message and an
         evacuation notice (safety code red, nearest open shelter with room) to every person token
         in it; each shelter's check-ins to people.shelter_occupancy, read alongside by flood_zones,
         which sends a zone's order to the next shelter when its own fills up

Operators may publish their own orders on `people.evacuation_orders`; they are carried out the
same way. Notices have deterministic ids: a replay resends the same notice, never a second one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace

from agents.alerts import send_alert, send_notice
from agents.flood import LEVELS, colour_rank
from schemas.cap import Alert, Incident, MsgType, bilingual, cap_id, zone_area
from schemas.contract import Rejected
from schemas.records import EvacuationOrder, LotOrder, Notice, ShelterOccupancy, Whereabouts, ZoneFlood
from schemas.reference import CityMap, Venue, Zone
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings, Trigger
from streams.stage import Stage
from streams.table import GroupedTable, Table

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Rules (pure)


def triggers_for(zone_id: str, triggers: tuple[Trigger, ...]) -> list[tuple[str, str]]:
    """The (kind, level) triggers of a zone: its own if it has any, otherwise those of every zone."""
    own = [t for t in triggers if t.zone_id == zone_id]
    return [(t.kind, t.level) for t in own or [t for t in triggers if t.zone_id is None]]


def level_rank(kind: str, level: str | None, s: Settings) -> int:
    if level is None:
        return -1
    return colour_rank(level, s) if kind == "rain" else LEVELS.index(level)


def reached(levels: dict[str, tuple[str, str]], triggers: list[tuple[str, str]], s: Settings) -> str | None:
    """The first trigger some source of the zone has reached ("rain:orange"), or None."""
    for kind, at_least in triggers:
        for source_kind, level in levels.values():
            if source_kind == kind and level_rank(kind, level, s) >= level_rank(kind, at_least, s):
                return f"{kind}:{level}"
    return None


def centre(zone: Zone) -> tuple[float, float]:
    ring = zone.polygon[:-1] if len(zone.polygon) > 1 and zone.polygon[0] == zone.polygon[-1] else zone.polygon
    return (sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)) if ring else (0.0, 0.0)


def nearest_shelter(zone: Zone, city: CityMap, unsafe_zones: set[str], full: Collection[str] = ()) -> Venue | None:
    """The shelter nearest the zone's centre outside every zone under an order, among those with room."""
    lat, lon = centre(zone)
    open_shelters = [v for v in city.venues.values()
                     if v.kind == "shelter" and v.capacity > 0 and v.zone_id not in unsafe_zones and v.venue_id not in full]
    return min(open_shelters, key=lambda v: (math.hypot(v.lat - lat, (v.lon - lon) * math.cos(math.radians(lat))), v.venue_id),
               default=None)


@dataclass(frozen=True, slots=True)
class ZoneFloodWatch:
    """A zone's flood sources and the orders they have set off."""

    levels: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (kind, level)
    garages_incident: Incident | None = None  # while the garages are closed; its id is the lot orders' id
    evacuation_order: str | None = None
    shelter_id: str | None = None  # where the order sends people


def garage_message(
    incident: Incident, msg_type: MsgType, zone: Zone, lots: list[str], why: str, at: float, s: Settings
) -> tuple[Incident, Alert]:
    cleared = msg_type == "Cancel"
    if cleared:
        texts = {"zh-CN": (f"{zone.name}地下车库恢复开放", f"{zone.name}内涝风险已降低。", "地下车库恢复进入。"),
                 "en-US": (f"Underground car parks reopen in {zone.name}", f"The flood risk in {zone.name} has eased.",
                           "Underground car parks are open again.")}
    else:
        texts = {"zh-CN": (f"{zone.name}地下车库紧急关闭", f"{zone.name}内涝风险（{why}），地下车库停止进入。",
                           "请立即将地下车库内车辆驶离至地势较高处，切勿进入地下车库。"),
                 "en-US": (f"Move your car out of underground car parks in {zone.name}",
                           f"Flood risk in {zone.name} ({why}): underground car parks are closed to entry.",
                           "Drive your vehicle out of underground car parks to higher ground now; do not go down into them.")}
    info = bilingual(texts, "Safety", "Underground car park closure", "AllClear" if cleared else "Execute",
                     "Past" if cleared else "Immediate", "Severe", "Likely",
                     [("zone_id", zone.zone_id), ("trigger", why), ("lots", " ".join(lots))],
                     [zone_area(zone)])
    return incident.message(s.cap, msg_type, at, info)


def evacuation_message(incident: Incident, msg_type: MsgType, zone: Zone, shelter: Venue | None, why: str, at: float,
                       s: Settings) -> tuple[Incident, Alert]:
    cleared = msg_type == "Cancel"
    where_zh = f"前往{shelter.name}" if shelter else "前往地势较高的安全地点"
    where_en = f"Go to {shelter.name}" if shelter else "Go to higher ground"
    if cleared:
        texts = {"zh-CN": (f"{zone.name}撤离令解除", f"{zone.name}的撤离令已解除。", "可按指引有序返回。"),
                 "en-US": (f"Evacuation order lifted for {zone.name}", f"The evacuation order for {zone.name} is lifted.",
                           "You may return home as directed.")}
    else:
        texts = {"zh-CN": (f"{zone.name}紧急撤离", f"{zone.name}有严重内涝风险（{why}），请立即撤离。",
                           f"请立即{where_zh}，到达后扫码登记。"),
                 "en-US": (f"Evacuate {zone.name} now", f"Severe flood risk in {zone.name} ({why}): leave the area now.",
                           f"{where_en} and scan your code when you arrive.")}
    parameters = [("zone_id", zone.zone_id), ("reason", why)] + ([("shelter_id", shelter.venue_id)] if shelter else [])
    info = bilingual(texts, "Safety", "Flood evacuation", "AllClear" if cleared else "Evacuate",
                     "Past" if cleared else "Immediate", "Extreme", "Likely", parameters,
                     [zone_area(zone)])
    return incident.message(s.cap, msg_type, at, info)


def evacuation_notice(order_id: str, at: float, token: str, zone: Zone, shelter: Venue | None) -> Notice:
    where_zh = f"{shelter.name}" if shelter else "地势较高的安全地点"
    where_en = shelter.name if shelter else "higher ground"
    return Notice(f"{order_id}.{token}", token, "person", "evacuate", at, zone.zone_id,
                  [("zh-CN", f"{zone.name}已发布撤离令，您的安全码已转为红码。请立即前往{where_zh}，到达后扫码登记。"),
                   ("en-US", f"An evacuation order covers {zone.name}; your safety code is now red. "
                             f"Go to {where_en} now and scan your code when you arrive.")],
                  safety_code="red", shelter_id=shelter.venue_id if shelter else None, order_id=order_id)


def shelter_changed_notice(order_id: str, token: str, zone: Zone, full: Venue | None, shelter: Venue | None,
                           at: float) -> Notice:
    """To a person still on the way: the shelter they were sent to is full, go to the next one."""
    was_zh, was_en = (full.name, full.name) if full else ("原避难场所", "your shelter")
    where_zh, where_en = (shelter.name, shelter.name) if shelter else ("地势较高的安全地点", "higher ground")
    return Notice(f"{order_id}.{token}.to.{shelter.venue_id if shelter else 'higher-ground'}", token, "person",
                  "shelter_changed", at, zone.zone_id,
                  [("zh-CN", f"{was_zh}已满，请改为前往{where_zh}，到达后扫码登记。"),
                   ("en-US", f"{was_en} is full: go to {where_en} instead and scan your code when you arrive.")],
                  safety_code="red", shelter_id=shelter.venue_id if shelter else None, order_id=order_id)


def lifted_notice(order_id: str, token: str, zone: Zone, at: float) -> Notice:
    return Notice(f"{order_id}.{token}.lifted", token, "person", "order_lifted", at, zone.zone_id,
                  [("zh-CN", f"{zone.name}撤离令已解除，您的安全码恢复为绿码。"),
                   ("en-US", f"The evacuation order for {zone.name} is lifted; your safety code is green again.")],
                  safety_code="green", order_id=order_id)


# ---------------------------------------------------------------------------------------------
# Stages


def _zone(city: CityMap, zone_id: str) -> Zone:
    return city.zones.get(zone_id) or Zone(zone_id, zone_id, [])


class FloodZonesStage(Stage):
    """All zones on one partition: each zone's flood sources, and the orders they set off.

    One partition suffices (a zone's flood level changes a few times a storm) and lets the
    nearest open shelter with room be chosen knowing every zone under an order and every
    shelter's check-ins (read alongside); a zone whose shelter fills is sent to the next one.
    """

    name = "flood_zones"
    source = "zone_floods"
    contract = ZoneFlood
    alongside = {"shelter_occupancy": ShelterOccupancy}
    zones = Table(ZoneFloodWatch)
    occupancy = Table(int)  # per shelter: the people checked in

    def knows(self, f: ZoneFlood | ShelterOccupancy) -> bool:
        return f.zone_id in self.reference.city.zones

    def full(self) -> set[str]:
        """The shelters with no room left."""
        venues = self.reference.city.venues
        return {v for v, people in self.occupancy.items() if v in venues and people >= venues[v].capacity}

    def on_occupancy(self, o: ShelterOccupancy, effects: Effects) -> None:
        """A shelter's check-ins: when it fills, every zone sent there goes to the next shelter."""
        city, s = self.reference.city, self.settings
        venue, was_full = city.venues.get(o.shelter_id), o.shelter_id in self.full()
        self.occupancy[o.shelter_id] = o.occupancy
        if venue is None or was_full or o.occupancy < venue.capacity:
            return
        unsafe, full = {z for z, w in self.zones.items() if w.evacuation_order}, self.full()
        sent_there = sorted(z for z, w in self.zones.items() if w.evacuation_order and w.shelter_id == venue.venue_id)
        for zone_id in sent_there:
            zone, watch = _zone(city, zone_id), self.zones[zone_id]
            shelter = nearest_shelter(zone, city, unsafe, full)
            why = reached(watch.levels, triggers_for(zone_id, s.orders.evacuation_on), s) or "flood risk"
            assert watch.evacuation_order is not None  # only zones under an order are sent on
            effects.send(topics.evacuation_orders, zone_id, EvacuationOrder(
                watch.evacuation_order, zone_id, "redirect", o.at, why, shelter.venue_id if shelter else None))
            self.zones[zone_id] = replace(watch, shelter_id=shelter.venue_id if shelter else None)

    def on_event(self, f: ZoneFlood | ShelterOccupancy, source: Source, effects: Effects) -> None:
        if isinstance(f, ShelterOccupancy):
            return self.on_occupancy(f, effects)
        city, s = self.reference.city, self.settings
        if f.zone_id not in city.zones:
            raise Rejected(f"unknown zone_id {f.zone_id!r}: not in the zones reference", "unknown_reference")
        watch = self.zones.get(f.zone_id, ZoneFloodWatch())
        levels = {k: v for k, v in watch.levels.items() if k != f.source_id}
        if f.level is not None:
            levels[f.source_id] = (f.kind, f.level)
        watch = replace(watch, levels=levels)
        zone = city.zones[f.zone_id]
        underground = sorted(lot.lot_id for lot in city.lots.values() if lot.zone_id == zone.zone_id and lot.underground)

        why = reached(levels, triggers_for(zone.zone_id, s.orders.garage_closure_on), s)
        if (why is not None) != (watch.garages_incident is not None):
            incident = watch.garages_incident or Incident(cap_id(f"garages.{zone.zone_id}.{int(f.at)}"))
            order_id = incident.id
            for lot_id in underground:
                effects.send(topics.lot_orders, lot_id, LotOrder(order_id, lot_id, zone.zone_id, why is not None, f.at,
                                                                 why or "flood risk eased"))
            incident, alert = garage_message(incident, "Alert" if why else "Cancel", zone, underground,
                                             why or "eased", f.at, s)
            send_alert(alert, effects)
            watch = replace(watch, garages_incident=incident if why else None)

        why = reached(levels, triggers_for(zone.zone_id, s.orders.evacuation_on), s)
        if (why is not None) != (watch.evacuation_order is not None):
            if why is not None:
                unsafe = {z for z, w in self.zones.items() if w.evacuation_order} | {zone.zone_id}
                shelter = nearest_shelter(zone, city, unsafe, self.full())
                order = EvacuationOrder(cap_id(f"evacuation.{zone.zone_id}.{int(f.at)}"), zone.zone_id, "evacuate",
                                        f.at, why, shelter.venue_id if shelter else None)
            else:
                order = EvacuationOrder(watch.evacuation_order, zone.zone_id, "lift", f.at, "flood risk eased")
            effects.send(topics.evacuation_orders, zone.zone_id, order)
            watch = replace(watch, evacuation_order=order.order_id if why else None, shelter_id=order.shelter_id if why else None)
        self.zones[zone.zone_id] = watch

    def gauges(self) -> metrics.Gauges:
        return metrics.gauge("citybrain_active_incidents", sum(1 for w in self.zones.values() if w.garages_incident), "Safety")



@dataclass(frozen=True, slots=True)
class ZoneOrder:
    """The evacuation order a zone is under."""

    order_id: str
    shelter_id: str | None
    incident: Incident


class EvacuationStage(Stage):
    """Per zone: who is in it (by token) and at which of its shelters, and the order it is under."""

    name = "evacuation"
    source = "whereabouts"
    contract = Whereabouts
    alongside = {"evacuation_orders": EvacuationOrder}
    residents = GroupedTable(str)  # by (zone, person token): the shelter they are at, "" at none
    orders = Table(ZoneOrder)  # by zone: the order it is under
    notified = GroupedTable(str)  # by (zone, person token) told to evacuate: the order they were told of
    zones = Table(dict, restored=False)  # the live view of each zone's people
    shelters = Table(dict, restored=False)  # the live view of each shelter's occupancy

    def restore(self, hashes: dict[str, dict[str, bytes]]) -> None:
        self.sheltered: dict[str, int] = {}  # shelter -> people checked in
        for shelter in self.residents.values():
            if shelter:
                self.sheltered[shelter] = self.sheltered.get(shelter, 0) + 1

    def gauges(self) -> metrics.Gauges:
        under = sum(len(self.notified.group(z)) for z in self.orders)
        return metrics.merge(metrics.gauge("citybrain_people_under_evacuation_orders", under),
                             metrics.gauge("citybrain_active_incidents", len(self.orders), "Safety"))

    def knows(self, e: Whereabouts | EvacuationOrder) -> bool:
        return e.zone_id in self.reference.city.zones

    def on_event(self, e: Whereabouts | EvacuationOrder, source: Source, effects: Effects) -> None:
        zone = _zone(self.reference.city, e.zone_id)
        if isinstance(e, EvacuationOrder):
            self.on_order(e, zone, effects)
            return
        key = (zone.zone_id, e.person_token)
        was_at = self.residents.pop(key, None)
        if was_at:
            self.sheltered[was_at] -= 1
            self.tell_occupancy(was_at, zone, e.at, effects)
        if not e.arrived:
            return
        self.residents[key] = e.shelter_id or ""
        if e.shelter_id:
            self.sheltered[e.shelter_id] = self.sheltered.get(e.shelter_id, 0) + 1
            self.tell_occupancy(e.shelter_id, zone, e.at, effects)
        order = self.orders.get(zone.zone_id)
        if order is not None and not e.shelter_id:
            self.notify(order, zone, e.person_token, e.at, effects)

    def tell_occupancy(self, shelter_id: str, zone: Zone, at: float, effects: Effects) -> None:
        """A shelter's check-ins, to the stage that chooses shelters (its zone is this partition's)."""
        effects.send(topics.shelter_occupancy, shelter_id,
                     ShelterOccupancy(shelter_id, zone.zone_id, self.sheltered.get(shelter_id, 0), at))

    def notify(self, order: ZoneOrder, zone: Zone, token: str, at: float, effects: Effects) -> None:
        """Tell one person in the zone to evacuate, once per order."""
        if token in self.notified.group(zone.zone_id):
            return
        self.notified[zone.zone_id, token] = order.order_id
        shelter = self.reference.city.venues.get(order.shelter_id) if order.shelter_id else None
        send_notice(evacuation_notice(order.order_id, at, token, zone, shelter), effects)

    def on_order(self, o: EvacuationOrder, zone: Zone, effects: Effects) -> None:
        current = self.orders.get(zone.zone_id)
        city, s = self.reference.city, self.settings
        if o.action == "evacuate" and (current is None or current.order_id != o.order_id):
            shelter = city.venues.get(o.shelter_id) if o.shelter_id else nearest_shelter(zone, city, {zone.zone_id})
            incident, alert = evacuation_message(current.incident if current else Incident(cap_id(o.order_id)),
                                                 "Alert" if current is None else "Update", zone, shelter, o.reason, o.at, s)
            send_alert(alert, effects)
            order = ZoneOrder(o.order_id, shelter.venue_id if shelter else None, incident)
            self.orders[zone.zone_id] = order
            for token, at_shelter in sorted(self.residents.group(zone.zone_id).items()):
                if not at_shelter:
                    self.notify(order, zone, token, o.at, effects)
        elif o.action == "redirect" and current is not None and current.order_id == o.order_id \
                and o.shelter_id != current.shelter_id:
            full, shelter = city.venues.get(current.shelter_id or ""), city.venues.get(o.shelter_id or "")
            incident, alert = evacuation_message(current.incident, "Update", zone, shelter, o.reason, o.at, s)
            send_alert(alert, effects)
            self.orders[zone.zone_id] = replace(current, shelter_id=o.shelter_id, incident=incident)
            # Those told and still in the zone, not yet at a shelter, are on their way: sent on.
            here = self.residents.group(zone.zone_id)
            for token in sorted(self.notified.group(zone.zone_id)):
                if here.get(token) == "":
                    send_notice(shelter_changed_notice(o.order_id, token, zone, full, shelter, o.at), effects)
        elif o.action == "lift" and current is not None and current.order_id == o.order_id:
            _, alert = evacuation_message(current.incident, "Cancel", zone, None, o.reason, o.at, s)
            send_alert(alert, effects)
            for token in sorted(self.notified.pop_group(zone.zone_id)):
                send_notice(lifted_notice(o.order_id, token, zone, o.at), effects)
            del self.orders[zone.zone_id]

    def flush(self, effects: Effects) -> None:
        city = self.reference.city
        for zone_id in self.residents.dirty_groups() | self.notified.dirty_groups() | self.orders.dirty():
            order = self.orders.get(zone_id)
            self.zones[zone_id] = {
                "zone_id": zone_id, "people": len(self.residents.group(zone_id)),
                "evacuation_order": order.order_id if order else None,
                "shelter_id": order.shelter_id if order else None, "told_to_evacuate": len(self.notified.group(zone_id)),
            }
            for v in city.venues.values():
                if v.kind == "shelter" and v.zone_id == zone_id:
                    self.shelters[v.venue_id] = {"shelter_id": v.venue_id, "zone_id": zone_id, "capacity": v.capacity,
                                                 "occupancy": self.sheltered.get(v.venue_id, 0)}


runtime.stage(FloodZonesStage)
runtime.stage(EvacuationStage)
