"""A broker that is down makes its clients log an error for every retry: the worker lets one of
each kind through per interval, and every line of its own."""

from __future__ import annotations

import logging

from streams.app import Repeats


def test_the_kafka_clients_repeating_themselves_are_held_back_and_counted():
    repeats = Repeats(every_s=60)
    records = [logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, "Unable connect to node %s", (1,), None)
               for _ in range(500)]
    assert [repeats.filter(r) for r in records].count(True) == 1
    other = logging.LogRecord("aiokafka.client", logging.ERROR, __file__, 1, "Unable to update metadata", (), None)
    assert repeats.filter(other)  # another kind of complaint is let through
    ours = [logging.LogRecord("streams.effects", logging.WARNING, __file__, 1, "dead-lettered %s", (i,), None)
            for i in range(500)]
    assert all(repeats.filter(r) for r in ours)

    repeats.last[("aiokafka.conn", "Unable connect to node %s")] -= 61  # the interval has passed
    later = logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, "Unable connect to node %s", (1,), None)
    assert repeats.filter(later)
    assert later.getMessage() == "Unable connect to node 1 [and 499 more like this in the last 60 s]"
