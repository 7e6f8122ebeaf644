"""The flood levels every flood stage and the evacuations weigh: the waterlogging lines a
monitored point's depth crosses, and the rainstorm signals a zone's rain reaches.

The flood brain itself is three sub-domains, a module each:
  agents/waterlogging.py  flood.water_depths (by point)  -> waterlogging       -> per-point level
                          and sensor health, CAP alerts on crossing, rising, faults
  agents/rain.py          flood.rain_readings (by gauge) -> rain       -> rolling totals per gauge;
                          flood.gauge_rain (by zone) -> zone_rain         -> CMA rainstorm signals
  agents/reports.py       flood.citizen_reports -> reports        -> near a point, or a grid cell;
                          flood.report_cells (by cell) -> report_cells    -> clusters without a sensor
"""

from __future__ import annotations

from schemas.cap import Severity
from streams.settings import Settings

LEVELS = ("watch", "warning", "closure", "severe")
POINT_RADIUS_KM = 0.3  # how far around a monitored point its alerts speak
SEVERITY: dict[str, Severity] = {"watch": "Minor", "warning": "Moderate", "closure": "Severe", "severe": "Extreme"}  # blue..red


def waterlogging_level(depth_cm: float, s: Settings) -> str | None:
    """The highest level whose line the depth has reached, or None below the watch line."""
    level = None
    for name, line in zip(LEVELS, s.waterlogging.levels_cm):
        if depth_cm >= line:
            level = name
    return level


def rank(level: str | None) -> int:
    return -1 if level is None else LEVELS.index(level)


def colour_rank(colour: str | None, s: Settings) -> int:
    """A rainstorm signal's rank, lowest first (-1 for none)."""
    return -1 if colour is None else [rule.colour for rule in s.rain.signals].index(colour)
