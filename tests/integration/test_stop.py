"""A worker stalled on a Redis that does not answer (frozen mid-run) still stops when told to, and
the worker after it ends as an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_batch_path import fed_city, readings_applied, wait_for
from tests.integration.test_restart import assert_same_city

pytestmark = pytest.mark.integration

STOPS_WITHIN_S = 20.0  # what a service manager waits before it kills (systemd's default is 90 s)


def test_a_worker_stalled_on_a_frozen_redis_stops_on_sigterm_and_loses_nothing(city_run, rush_hour, steady):
    steady_run, steady_state = steady
    run, feed, total = fed_city(city_run, rush_hour)
    (worker,) = run.workers
    wait_for(lambda: readings_applied(run) >= 0.3 * total)
    redis_pid = int((REPO / ".run" / "redis" / "pid").read_text())
    os.kill(redis_pid, signal.SIGSTOP)  # connections stay open; nothing answers
    try:
        time.sleep(3)  # the worker's commits now wait on Redis
        stopping = time.monotonic()
        worker.terminate()
        try:
            worker.wait(STOPS_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored SIGTERM for {STOPS_WITHIN_S:.0f} s:\n{run.worker_log()}")
        took = time.monotonic() - stopping
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    run.workers.remove(worker)
    print(f"stopped {took:.1f} s after SIGTERM")
    feed.join()
    run.start_worker()
    state = run.wait_quiet(timeout=300)
    assert_same_city(run, state, steady_run, steady_state)
