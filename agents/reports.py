"""Residents' reports of water on the road: near a monitored point they corroborate it, elsewhere
enough of them close together raise a Likely alert for their grid cell.

  flood.citizen_reports -> reports         -> flood.point_reports (by point) or flood.report_cells
  flood.report_cells (by cell) -> report_cells    -> clusters where no point is monitored
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agents.alerts import send_alert
from schemas.cap import Alert, Incident, MsgType, bilingual, cap_id, circle_area
from schemas.events import CitizenFloodReport
from schemas.records import CellReport, PointReport
from schemas.reference import WaterloggingPoint, distance_m
from streams import metrics, runtime, topics
from streams.effects import Effects, Source
from streams.settings import Settings
from streams.stage import Stage
from streams.table import Table

log = logging.getLogger(__name__)

# How far around a cluster of residents' reports an alert speaks.
CELL_RADIUS_KM = 0.5

# ---------------------------------------------------------------------------------------------
# Residents' reports: corroborating monitored points, clusters where there is no sensor


def nearest_point(points: dict[str, WaterloggingPoint], lat: float, lon: float) -> tuple[WaterloggingPoint | None, float]:
    best, best_m = None, math.inf
    for point in points.values():
        d = distance_m(lat, lon, point.lat, point.lon)
        if d < best_m:
            best, best_m = point, d
    return best, best_m


def cell_of(lat: float, lon: float, s: Settings) -> str:
    return f"{math.floor(lat / s.reports.cell_deg)}_{math.floor(lon / s.reports.cell_deg)}"


class ReportsStage(Stage):
    """Routes each report: to the monitored point it is near, or to its grid cell. The reporter's
    phone number goes no further than this stage."""

    name = "reports"
    source = "flood_reports"
    contract = CitizenFloodReport

    def on_event(self, r: CitizenFloodReport, source: Source, effects: Effects) -> None:
        point, metres = nearest_point(self.reference.city.points, r.lat, r.lon)
        if point is not None and metres <= self.settings.reports.radius_m:
            effects.send(topics.point_reports, point.point_id,
                         PointReport(point.point_id, r.report_id, r.event_time, round(metres, 1)))
        else:
            cell = cell_of(r.lat, r.lon, self.settings)
            effects.send(topics.report_cells, cell, CellReport(cell, r.report_id, r.event_time, r.lat, r.lon))

    def flush(self, effects: Effects) -> None:
        pass


@dataclass(frozen=True, slots=True)
class CellWatch:
    reports: dict[str, float] = field(default_factory=dict)  # report_id -> time, within the window
    incident: Incident | None = None
    lat: float = 0.0
    lon: float = 0.0
    cleared_at: float | None = None  # reports from before the last all-clear belong to that episode


def step_cell(watch: CellWatch, c: CellReport, s: Settings) -> tuple[CellWatch, Alert | None]:
    """Count a report; enough of them close together raise a Likely alert for the cell."""
    if c.report_id in watch.reports or (watch.cleared_at is not None and c.at <= watch.cleared_at):
        return watch, None
    # Counted back from the newest report, so reports that arrive out of order count the same.
    newest = max(c.at, *watch.reports.values()) if watch.reports else c.at
    reports = {rid: t for rid, t in (watch.reports | {c.report_id: c.at}).items() if newest - t <= s.reports.window_s}
    watch = replace(watch, reports=reports, lat=c.lat, lon=c.lon)
    if watch.incident is not None or len(reports) < s.reports.cluster_size:
        return watch, None
    incident = Incident(cap_id(f"reported.{c.cell_id}.{int(newest)}"))
    return _cell_message(watch, incident, "Alert", newest, c.cell_id, s)


def quiet_cells(cells: Mapping[str, CellWatch], now: float, s: Settings) -> list[str]:
    return sorted(cid for cid, w in cells.items()
                  if w.incident is not None and now - max(w.reports.values(), default=now) >= s.reports.clear_s)


def clear_cell(watch: CellWatch, cell_id: str, s: Settings) -> tuple[CellWatch, Alert]:
    """No report for `report_clear_s`: the reported waterlogging is over, from that moment."""
    at = max(watch.reports.values()) + s.reports.clear_s
    assert watch.incident is not None  # quiet cells are those with an incident under way
    watch, alert = _cell_message(watch, watch.incident, "Cancel", at, cell_id, s)
    return replace(watch, incident=None, reports={}, cleared_at=at), alert


def _cell_message(
    watch: CellWatch, incident: Incident, msg_type: MsgType, at: float, cell_id: str, s: Settings
) -> tuple[CellWatch, Alert]:
    cleared = msg_type == "Cancel"
    texts = {
        "zh-CN": ("市民报告积水已消退" if cleared else "多名市民报告此处积水",
                  f"{len(watch.reports)}条市民报告，该处无监测点。", "注意绕行低洼路段。" if not cleared else "无需采取行动。"),
        "en-US": ("Reported waterlogging has cleared" if cleared else "Residents report waterlogging here",
                  f"{len(watch.reports)} residents' reports where no point is monitored.",
                  "No action needed." if cleared else "Take care on low-lying roads here; avoid them if you can."),
    }
    info = bilingual(texts, "Met", "Reported waterlogging", "AllClear" if cleared else "Avoid", "Past" if cleared else "Expected",
                     "Moderate", "Likely", [("cell_id", cell_id), ("reports", str(len(watch.reports)))],
                     [circle_area(f"Reports around {watch.lat:.4f},{watch.lon:.4f}", watch.lat, watch.lon, CELL_RADIUS_KM)])
    incident, alert = incident.message(s.cap, msg_type, at, info)
    return replace(watch, incident=incident), alert


class ReportCellsStage(Stage):
    """Per grid cell without a monitored point: clusters of residents' reports."""

    name = "report_cells"
    source = "report_cells"
    contract = CellReport
    cells = Table(CellWatch)

    def gauges(self) -> metrics.Gauges:
        return metrics.gauge("citybrain_active_incidents", sum(1 for w in self.cells.values() if w.incident), "Met")

    def on_event(self, c: CellReport, source: Source, effects: Effects) -> None:
        self.cells[c.cell_id], alert = step_cell(self.cells.get(c.cell_id, CellWatch()), c, self.settings)
        if alert is not None:
            send_alert(alert, effects)

    def flush(self, effects: Effects) -> None:
        clock = max((t for w in self.cells.values() for t in w.reports.values()), default=-math.inf)
        for cell_id in quiet_cells(self.cells, clock, self.settings):
            self.cells[cell_id], alert = clear_cell(self.cells[cell_id], cell_id, self.settings)
            send_alert(alert, effects)


runtime.stage(ReportsStage)
runtime.stage(ReportCellsStage)
