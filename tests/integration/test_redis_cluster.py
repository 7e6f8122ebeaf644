"""The rush hour on a Redis Cluster of three masters (the stack's): a second worker joins mid-feed,
and one master is SIGKILLed and restarted from its append-only file while the workers run. Each
partition's keys share a hash tag, so its atomic commit runs on one master; the city ends as the
uninterrupted run on a single Redis ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_batch_path import fed_city, readings_applied, wait_for
from tests.integration.test_restart import assert_same_city

pytestmark = pytest.mark.integration

CLUSTER = {"redis_url": "redis://127.0.0.1:16390/0", "redis_cluster": "true"}


def masters_holding(run) -> set[int]:
    """The ports of the masters that hold keys of the run."""
    nodes = run.redis.get_primaries()
    return {n.port for n in nodes if any(True for _ in n.redis_connection.scan_iter(
        match=f"{run.settings.key_prefix}:*", count=1000))}


def test_a_rebalance_and_a_master_killed_on_a_redis_cluster_end_as_an_uninterrupted_run(city_run, rush_hour, steady):
    steady_run, steady_state = steady
    run, feed, total = fed_city(city_run, rush_hour, **CLUSTER)
    wait_for(lambda: readings_applied(run) >= 0.2 * total)
    run.start_worker()  # joins the group mid-feed: partitions move between the workers
    wait_for(lambda: readings_applied(run) >= 0.5 * total)
    victim = REPO / ".run" / "redis-cluster" / "16391" / "pid"
    os.kill(int(victim.read_text()), signal.SIGKILL)  # a third of the slots go away
    time.sleep(5)
    subprocess.run([str(REPO / "ops" / "stack.sh"), "up"], check=True, capture_output=True,
                   env={**os.environ, "CITYBRAIN_PYTHON": sys.executable})
    feed.join()
    state = run.wait_quiet(timeout=300)

    assert masters_holding(run) == {16390, 16391, 16392}  # the partitions' tags spread over all three
    assert_same_city(run, state, steady_run, steady_state)
