"""The map page on the real broker and Redis, drawn by headless Chromium (Debian's package): it
loads, draws each zone, point and car park with the state the scenario left, and a screenshot is
kept as an artefact (.run/artefacts/city-map.png)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import html

from schemas.contract import parse_time
from schemas.events import ParkingEvent, RainGaugeReading, WaterDepthReading
from schemas.reference import Lot, RainGauge, WaterloggingPoint, Zone

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = parse_time("2026-07-20T06:00:00Z")
STAGES = (("rain", "rain_readings"), ("zone_rain", "gauge_rain"), ("waterlogging", "water_depths"),
          ("flood_zones", "zone_floods"), ("parking", "parking_events"))


def chromium(*args: str) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is installed by ops/setup.sh"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=10000", "--window-size=1200,900", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_map_draws_the_citys_state_in_a_browser(city_run, tmp_path):
    run = city_run(partitions=1)
    zones = [Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.8, 113.6), (34.7, 113.6)]),
             Zone("Z2", "Erqi", [(34.6, 113.6), (34.6, 113.7), (34.7, 113.7), (34.7, 113.6), (34.6, 113.6)])]
    point = WaterloggingPoint("P1", "Jingguang underpass", "Z1", "S1", 34.75, 113.65, "underpass")
    lot = Lot("L1", "Erqi square", "Z2", 10, lat=34.65, lon=113.65)
    run.publish([*[("zones", z.zone_id, z) for z in zones], ("points", "P1", point), ("lots", "L1", lot),
                 ("gauges", "G1", RainGauge("G1", "Z1", 34.75, 113.65))])
    run.start_worker()
    rain = [("rain_readings", "G1", RainGaugeReading("G1", T0 + 600 * k, 12.0, 600.0)) for k in range(1, 7)]  # 72 mm an hour
    water = [("water_depths", "P1", WaterDepthReading("W-P1", "P1", T0 + 600 * k, d)) for k, d in enumerate([0, 10, 20, 28])]
    cars = [("parking_events", "L1", ParkingEvent(f"in-{i}", "L1", f"豫A{i:05d}", "entry", T0 + 60 * i)) for i in range(10)]
    run.publish([*rain, *water, *cars])
    run.wait_quiet(stages=STAGES)

    url = f"http://127.0.0.1:{run.web_port}/map"
    drawn = chromium("--dump-dom", url)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    page = html.fromstring(drawn.stdout)
    assert page.body.get("data-drawn") == "true", drawn.stdout[:2000]
    zones_drawn = {p.get("data-zone"): p for p in page.xpath("//*[@data-zone]")}
    assert zones_drawn["Z1"].get("data-signal") == "orange" and zones_drawn["Z2"].get("data-signal") == "none"
    (dot,) = page.xpath("//*[@data-point]")
    assert (dot.get("data-point"), dot.get("data-level")) == ("P1", "closure")
    assert [line.get("data-closed-segment") for line in page.xpath("//*[@data-closed-segment]")] == ["S1"]
    (square,) = page.xpath("//*[@data-lot]")
    assert square.get("data-status") == "full"
    assert "豫A" not in drawn.stdout  # people and plates are never drawn

    artefacts = ROOT / ".run" / "artefacts"
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "city-map.png"
    shot.unlink(missing_ok=True)
    taken = chromium(f"--screenshot={shot}", url)
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
