"""A picture of the city, served by every worker at /map: zones coloured by their rainstorm
signal and marked under evacuation, monitored points by waterlogging level and forecast, the
roads their water closes, car parks by status. The page draws the reference geometry itself (no
tile server, nothing from another host) from /map/state.json, and refreshes itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agents.evacuation import FloodZonesStage
from agents.parking import ParkingStage
from agents.rain import ZoneRainStage
from agents.waterlogging import WaterloggingStage
from schemas.contract import iso
from schemas.reference import CityMap
from streams import runtime
from streams.app import app

PAGE = Path(__file__).with_name("city_map.html")


def city_state(city: CityMap, zone_rain: dict, zone_floods: dict, points: dict, lots: dict, now: float) -> dict[str, Any]:
    """What the map draws: the reference geometry with each place's state, people never named."""
    return {
        "as_of": iso(now),
        "zones": [{"id": z.zone_id, "name": z.name, "rings": z.rings,
                   "signal": zone_rain.get(z.zone_id, {}).get("signal"),
                   "evacuation": getattr(zone_floods.get(z.zone_id), "evacuation_order", None) is not None,
                   "garages_closed": getattr(zone_floods.get(z.zone_id), "garages_incident", None) is not None}
                  for z in sorted(city.zones.values(), key=lambda z: z.zone_id)],
        "points": [{"id": p.point_id, "name": p.name, "lat": p.lat, "lon": p.lon, "segment_id": p.segment_id,
                    "depth_cm": points.get(p.point_id, {}).get("depth_cm"),
                    "level": points.get(p.point_id, {}).get("level"),
                    "alert_level": points.get(p.point_id, {}).get("alert_level"),
                    "warning_of": points.get(p.point_id, {}).get("warning_of"),
                    "sensor_health": points.get(p.point_id, {}).get("sensor_health")}
                   for p in sorted(city.points.values(), key=lambda p: p.point_id)],
        "lots": [{"id": lot.lot_id, "name": lot.name, "lat": lot.lat, "lon": lot.lon,
                  "status": lots.get(lot.lot_id, {}).get("status"), "occupancy": lots.get(lot.lot_id, {}).get("occupancy")}
                 for lot in sorted(city.lots.values(), key=lambda lot: lot.lot_id) if lot.placed],
    }


@app.page("/map")
async def serve_map(web, request):  # noqa: ANN001
    """The page: HTML, CSS and script in one document."""
    return web.bytes(PAGE.read_bytes(), content_type="text/html")  # the page says its charset


@app.page("/map/state.json")
async def serve_map_state(web, request):  # noqa: ANN001
    """The city's state as the page draws it, read from Redis: any worker draws the whole city."""
    read = runtime.read_table
    state = city_state(await runtime.current_city(), await read(ZoneRainStage, "zones"), await read(FloodZonesStage, "zones"),
                       await read(WaterloggingStage, "points"), await read(ParkingStage, "lots"), time.time())
    return web.bytes(json.dumps(state, ensure_ascii=False).encode(), content_type="application/json")
