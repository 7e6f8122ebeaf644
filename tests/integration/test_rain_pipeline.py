"""Rain gauges on the real broker -> zone totals and rainstorm signals as CAP messages."""

from __future__ import annotations

import pytest
from lxml import etree

from schemas.contract import parse_time
from schemas.events import RainGaugeReading
from schemas.reference import RainGauge, Zone
from tests.unit.test_cap import XSD

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T06:00:00Z")
ZONE = Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)])
GAUGES = [RainGauge("G1", "Z1", 34.75, 113.65), RainGauge("G2", "Z1", 34.72, 113.62)]

# Ten-minute readings: two hours of a downpour at G1 (9 mm each), lighter at G2, then dry.
G1_MM = [9.0] * 12 + [0.0] * 84
G2_MM = [4.0] * 12 + [0.0] * 84


def readings() -> list[RainGaugeReading]:
    out = []
    for i, (a, b) in enumerate(zip(G1_MM, G2_MM)):
        t = T0 + 600 * (i + 1)
        out += [RainGaugeReading("G1", t, a, 600.0), RainGaugeReading("G2", t, b, 600.0)]
    return out


def test_a_downpour_raises_escalates_steps_down_and_lifts_the_zone_signal_counting_each_reading_once(city_run):
    run = city_run()
    run.publish([("zones", "Z1", ZONE), *(("gauges", g.gauge_id, g) for g in GAUGES)])
    run.start_worker()
    # Every reading is sent twice, as a flaky gateway would: each must count once.
    run.publish([("rain_readings", r.gauge_id, r) for r in readings() for _ in range(2)])
    run.wait_quiet(stages=(("rain", "rain_readings"), ("zone_rain", "gauge_rain")))

    alerts = [a for a in run.records("alerts") if a["info"][0]["event"] == "Rainstorm"]
    signals = [(a["msg_type"], dict(a["info"][0]["parameters"])["signal"]) for a in alerts]
    # 54 mm in the first hour at G1 meets orange (50 mm in 3 h); 108 mm in two hours meets red.
    assert signals[:2] == [("Alert", "orange"), ("Update", "red")]
    assert signals[-2:] == [("Update", "cleared"), ("Cancel", "cleared")]  # the all clear, then its Cancel
    assert all(m == "Update" for m, _ in signals[2:-1])
    for earlier, later in zip(alerts, alerts[1:]):
        assert later["references"] == f"{earlier['sender']},{earlier['identifier']},{earlier['sent']}"
    for doc in run.raw_records("alerts_cap"):
        assert XSD.validate(etree.fromstring(doc)), XSD.error_log

    # At the end (16 h after the start) the zone's 12-hour total is G1's rain inside it, once.
    zone = run.merged("zone_rain", "zones")["Z1"]
    last = T0 + 600 * len(G1_MM)
    inside = sum(mm for i, mm in enumerate(G1_MM) if last - 12 * 3600 < T0 + 600 * (i + 1) <= last)
    assert zone["rain_12h_mm"] == pytest.approx(inside) and zone["signal"] is None
    assert run.merged("rain", "gauges")["G2"]["totals_mm"][3] == pytest.approx(0.0)
