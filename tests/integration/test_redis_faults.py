"""Redis losing writes under a running worker (killed and restarted from its append-only file, or
restored from an older copy): the state is found behind what was read, and the input it lost is
read again from Kafka, to the end an uninterrupted run reaches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_batch_path import fed_city
from tests.integration.test_restart import assert_same_city

pytestmark = pytest.mark.integration

# Every key of a run, read or replaced in one script: a point-in-time copy, as a snapshot is.
COPY = ("local out = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
        "out[#out + 1] = k out[#out + 1] = redis.call('DUMP', k) end return out")
RESTORE = """
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end
for i = 2, #ARGV, 2 do redis.call('RESTORE', ARGV[i], 0, ARGV[i + 1]) end
return (#ARGV - 1) / 2
"""


def applied_share(run, total: int) -> float:
    return sum(o + 1 for o in run.applied_offsets("traffic", 4).values()) / total


def wait_for_share(run, total: int, share: float) -> None:
    deadline = time.monotonic() + 180
    while applied_share(run, total) < share:
        assert time.monotonic() < deadline, run.worker_log()
        time.sleep(0.05)


def test_redis_restored_from_an_older_copy_mid_run_reads_the_lost_input_again(city_run, rush_hour, steady):
    steady, steady_state = steady
    restored, feed, readings = fed_city(city_run, rush_hour)
    pattern = f"{restored.settings.key_prefix}:*"
    wait_for_share(restored, readings, 0.25)
    copy = restored.redis.eval(COPY, 0, pattern)
    wait_for_share(restored, readings, 0.6)
    assert restored.redis.eval(RESTORE, 0, pattern, *copy) == len(copy) // 2
    assert applied_share(restored, readings) < 0.6  # Redis is back where the copy was taken
    feed.join(timeout=300)
    restored_state = restored.wait_quiet(timeout=300)

    assert_same_city(restored, restored_state, steady, steady_state)
    assert "Redis lost the writes between; reading them again from Kafka" in restored.worker_log()


def test_redis_sigkilled_mid_run_and_restarted_ends_as_an_uninterrupted_run(city_run, rush_hour, steady):
    steady, steady_state = steady
    killed, feed, readings = fed_city(city_run, rush_hour)
    wait_for_share(killed, readings, 0.4)
    pid = int((REPO / ".run" / "redis" / "pid").read_text())
    os.kill(pid, signal.SIGKILL)  # what the append-only file has not synced yet (up to 1 s) is gone
    time.sleep(5)  # the worker meets a Redis that does not answer
    subprocess.run([str(REPO / "ops" / "stack.sh"), "up"], check=True, capture_output=True,
                   env={**os.environ, "CITYBRAIN_PYTHON": sys.executable})
    feed.join(timeout=300)
    assert not feed.is_alive(), "the feed must have been published in full"
    killed_state = killed.wait_quiet(timeout=300)

    assert_same_city(killed, killed_state, steady, steady_state)
