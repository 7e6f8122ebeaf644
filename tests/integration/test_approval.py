"""Public alerts an operator approves first, on the real stack: a road closure's Severe warning
waits as a CAP Draft that any worker lists, goes out on `alerts` once approved over HTTP, and
never does once rejected, while the incident's earlier Moderate warning went straight out."""

from __future__ import annotations

import pytest

from schemas.contract import parse_time
from schemas.events import WaterDepthReading
from schemas.reference import WaterloggingPoint, Zone
from tests.integration.test_webhook_api import TOKEN, call
from tests.integration.test_webhooks import eventually

pytestmark = pytest.mark.integration

T0 = parse_time("2026-07-20T06:00:00Z")
FLOOD = (("waterlogging", "water_depths"), ("approval", "alert_reviews"))


def test_a_severe_warning_waits_for_an_operator_and_goes_out_only_when_approved(city_run):
    run = city_run(partitions=2, approval_severities="Severe,Extreme", webhook_api_tokens=TOKEN)
    points = [WaterloggingPoint("P1", "Jingguang underpass", "Z1", None, 34.75, 113.65, "underpass"),
              WaterloggingPoint("P2", "Nongye Rd dip", "Z2", None, 34.80, 113.70)]
    run.publish([*[("zones", z, Zone(z, z, [])) for z in ("Z1", "Z2")], *[("points", p.point_id, p) for p in points]])
    run.start_worker()
    eventually(lambda: call(run, "GET", "/alerts/drafts")[0] == 200, what="the worker's web server")
    assert call(run, "GET", "/alerts/drafts", token=None)[0] == 401
    # Both points flood past the closure line (27 cm): a Moderate warning, then a Severe one.
    depths = [0, 8, 16, 22, 29, 29, 29]
    run.publish([("water_depths", p, WaterDepthReading(f"W-{p}", p, T0 + 120 * i, d))
                 for p in ("P1", "P2") for i, d in enumerate(depths)])
    run.wait_quiet(stages=FLOOD)

    def road_alerts() -> list[tuple[str, str, str, str]]:
        return [(a["identifier"], a["info"][0]["severity"], a["msg_type"], a["status"]) for a in run.records("alerts")
                if a["info"][0]["event"] == "Road waterlogging"]

    status, drafts = call(run, "GET", "/alerts/drafts")
    assert status == 200
    held = {d["incidents"]: d for d in drafts}
    assert len(held) == 2 and all(d["status"] == "Draft" and d["info"][0]["severity"] == "Severe" for d in drafts)
    # Out went the watches and the Moderate warnings, nothing Severe.
    before = road_alerts()
    assert {s for _, s, _, _ in before} == {"Minor", "Moderate"} and all(status == "Actual" for *_, status in before)

    p1, p2 = (next(d for d in drafts if f".{p}." in d["incidents"]) for p in ("P1", "P2"))
    assert call(run, "POST", "/alerts/drafts/no-such-draft/approve")[0] == 404
    assert call(run, "POST", f"/alerts/drafts/{p1['identifier']}/approve", {"note": "x" * 5000})[0] == 400
    assert call(run, "POST", f"/alerts/drafts/{p1['identifier']}/approve", {"note": "confirmed on camera"})[0] == 202
    assert call(run, "POST", f"/alerts/drafts/{p2['identifier']}/reject", {"note": "a blocked drain, cleared"})[0] == 202
    eventually(lambda: call(run, "GET", "/alerts/drafts")[1] == [], what="both drafts decided")
    run.wait_quiet(stages=FLOOD)

    out = road_alerts()
    assert (p1["identifier"], "Severe", "Update", "Actual") in out
    assert not any(identifier == p2["identifier"] for identifier, *_ in out)
    assert sorted(out) == sorted([*before, (p1["identifier"], "Severe", "Update", "Actual")])
    # The approved warning chains to the Moderate one that went out before it.
    approved = next(a for a in run.records("alerts") if a["identifier"] == p1["identifier"])
    *_, moderate = (a for a in run.records("alerts") if a["incidents"] == p1["incidents"] and a["identifier"] != p1["identifier"])
    assert moderate["info"][0]["severity"] == "Moderate"
    assert approved["references"] == f"{moderate['sender']},{moderate['identifier']},{moderate['sent']}"
    assert "a blocked drain, cleared" in run.logs()[0]
