"""The operators' view on the real stack: the project's Prometheus config and alerting rules
pass promtool, and a real Prometheus scraping a worker through a storm answers every query of
every dashboard panel and every alerting rule."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, free_port
from tests.integration.test_webhooks import Receiver, subscribe

pytestmark = pytest.mark.integration

PROMETHEUS = REPO / "ops" / "prometheus"
DASHBOARDS = sorted((REPO / "ops" / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = "citybrain-prometheus"


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every panel target."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((board["title"], panel["title"], target["expr"]))
    return out


def test_the_prometheus_config_and_rules_pass_promtool():
    check = subprocess.run(["promtool", "check", "config", str(PROMETHEUS / "prometheus.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(["promtool", "test", "rules", str(PROMETHEUS / "tests" / "citybrain.rules.test.yml")],
                           capture_output=True, text=True)
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def test_every_dashboard_panel_uses_the_provisioned_datasource_with_a_unit():
    provisioned = (REPO / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    assert f"uid: {DATASOURCE_UID}" in provisioned
    assert {p.stem for p in DASHBOARDS} == {"city-overview", "stream-health"}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] and board["panels"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
            assert all(t["datasource"]["uid"] == DATASOURCE_UID and t["expr"] for t in panel["targets"]), panel["title"]


def query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # a query that does not parse is a 400 with the error
        return json.loads(exc.read())


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_a_real_prometheus_scraping_a_worker_through_a_storm_answers_every_panel_and_rule(city_run, tmp_path):
    receiver = Receiver()
    try:
        run = subscribe(city_run, tmp_path, [{"subscription_id": "ops-room", "url": receiver.url("/ops"),
                                              "categories": ["Safety"]}])
        run.start_worker()
        worker_port = run.web_port
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{PROMETHEUS / 'rules' / 'citybrain.rules.yml'}]\n"
            "scrape_configs:\n"
            "  - job_name: citybrain\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{worker_port}']}}]\n"
        )
        port = free_port()
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT,
        )
        try:
            citybrain = Path(sys.executable).parent / "citybrain"
            simulate = subprocess.run([str(citybrain), "simulate", "--scenario", "rainstorm", "--accel", "0"],
                                      env=run.env, cwd=tmp_path, capture_output=True, timeout=300)
            assert simulate.returncode == 0, simulate.stderr.decode()[-2000:]

            # The worker's exposition passes promtool's lint.
            exposition = get(f"http://127.0.0.1:{worker_port}/metrics")
            lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True)
            assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
            assert b"citybrain_events_processed_total" in exposition

            # Every panel returns data once the storm has gone through the worker.
            panels = panel_queries()
            deadline, empty = time.monotonic() + 240, panels
            while empty and time.monotonic() < deadline:
                time.sleep(2)
                empty = [(b, p, e) for b, p, e in panels
                         if query(port, e).get("status") != "success" or not query(port, e)["data"]["result"]]
            assert empty == [], f"panels without data:\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}"

            # Every alerting rule parses and is evaluated without error.
            groups = json.loads(get(f"http://127.0.0.1:{port}/api/v1/rules"))["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert {r["name"] for r in rules} == {"CitybrainWorkerDown", "CitybrainConsumerLagGrowing",
                                                  "CitybrainDeadLettersSpiking", "CitybrainWebhookEndpointFailing",
                                                  "CitybrainInputGone", "CitybrainStateReread",
                                                  "CitybrainAlertDraftWaiting"}
            for r in rules:
                assert query(port, r["query"])["status"] == "success", r["name"]
                assert r["health"] == "ok", (r["name"], r.get("lastError"))
            worker_up = query(port, 'up{job="citybrain"}')["data"]["result"]
            assert [s["value"][1] for s in worker_up] == ["1"]
            assert float(query(port, "sum(citybrain_notices_total)")["data"]["result"][0]["value"][1]) > 0
            delivered = query(port, 'sum(citybrain_webhook_deliveries_total{outcome="delivered"})')["data"]["result"]
            assert delivered and float(delivered[0]["value"][1]) > 0
        finally:
            prometheus.terminate()
            prometheus.wait(20)
    finally:
        receiver.close()
    assert receiver.verified("/ops")
