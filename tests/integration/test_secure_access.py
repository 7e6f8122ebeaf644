"""A worker that reaches Kafka over TLS with SCRAM-SHA-512 and Redis over TLS as an ACL user (the
stack's second listener and port), secrets read from files: a storm goes through end to end, no
secret reaches a log or a metric, and a refused credential stops the worker at once, saying why."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_flood_pipeline import P1, P2, ZONE, storm

pytestmark = pytest.mark.integration

TLS = REPO / ".run" / "tls"
SECURE = {
    "kafka_bootstrap": "127.0.0.1:19094",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_username": "citybrain",
    "kafka_password_file": str(TLS / "kafka-password"),
    "kafka_ca_file": str(TLS / "ca.pem"),
    "redis_url": "rediss://127.0.0.1:16380/0",
    "redis_username": "citybrain",
    "redis_password_file": str(TLS / "redis-password"),
    "redis_ca_file": str(TLS / "ca.pem"),
}


def test_a_storm_through_tls_scram_and_a_redis_acl_user_and_no_secret_in_sight(city_run):
    run = city_run(**SECURE)
    assert run.settings.kafka_password and run.settings.redis_password  # read from their files
    run.publish([("zones", "Z1", ZONE), ("points", "P1", P1), ("points", "P2", P2)])
    run.start_worker()
    run.publish(storm())
    run.wait_quiet(stages=(("waterlogging", "water_depths"),))

    flood = [a for a in run.records("alerts") if a["info"][0]["event"] == "Road waterlogging"]
    assert [(a["msg_type"], dict(a["info"][0]["parameters"])["level"]) for a in flood] == [
        ("Alert", "watch"), ("Update", "warning"), ("Update", "closure"), ("Update", "cleared"), ("Cancel", "cleared")]
    assert run.merged("waterlogging", "points")["P1"]["depth_cm"] == 2

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{run.web_port}/metrics", timeout=10).read().decode()
    assert "citybrain_events_processed_total" in metrics
    (log,) = run.logs()
    for secret in (run.settings.kafka_password, run.settings.redis_password):
        assert secret not in log and secret not in metrics


@pytest.mark.parametrize("refused", ["kafka", "redis"])
def test_a_credential_refused_stops_the_worker_at_start_saying_which(city_run, refused):
    run = city_run(**SECURE)
    run.env[f"CITYBRAIN_{refused.upper()}_PASSWORD"] = "not-the-password"  # the worker's, not the test's
    worker = run.start_worker()
    try:
        assert worker.wait(60) != 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker went on with a wrong {refused} password:\n{run.worker_log()}")
    (log,) = run.logs()
    said = {"kafka": "Kafka at 127.0.0.1:19094 refused the credentials of 'citybrain' (SCRAM-SHA-512)",
            "redis": "Redis at rediss://127.0.0.1:16380/0 refused the credentials of 'citybrain'"}[refused]
    assert said in log and "not-the-password" not in log
