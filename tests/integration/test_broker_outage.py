"""The broker stopped (SIGTERM or SIGKILL) for 20 s under a running worker: a consumer cut off is not silence, so no
window closes early, no reading is late, and the city ends as an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_redis_faults import wait_for_share
from tests.integration.test_restart import assert_same_city

pytestmark = pytest.mark.integration


def broker(sig: signal.Signals) -> None:
    pid = int((REPO / ".run" / "kafka" / "pid").read_text())
    os.kill(pid, sig)
    while subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0:
        time.sleep(0.2)


def start_broker() -> None:
    subprocess.run([str(REPO / "ops" / "stack.sh"), "up"], check=True, capture_output=True,
                   env={**os.environ, "CITYBRAIN_PYTHON": sys.executable})


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_broker_stopped_for_20_s_mid_run_changes_nothing(city_run, rush_hour, steady, stop):
    reference, events = rush_hour
    steady, steady_state = steady
    cut = city_run()
    cut.publish(reference)
    cut.publish(events)
    cut.start_worker()
    wait_for_share(cut, sum(1 for role, _, _ in events if role == "traffic_readings"), 0.4)
    try:
        broker(stop)
        time.sleep(20)  # the worker's idle timer (2 s here) comes round ten times meanwhile
    finally:
        start_broker()
    cut_state = cut.wait_quiet(timeout=300)

    assert_same_city(cut, cut_state, steady, steady_state)
    log = (cut.tmp / "worker-0.log").read_text(errors="replace")
    assert "Kafka does not say what is left to read" in log  # the timer asked, and waited
    assert log.count("ERROR") < 100  # the clients' reconnect errors, one of a kind per 10 s
