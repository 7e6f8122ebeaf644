"""Event-time tumbling windows: assignment, grace, lateness and closing."""

import math

from streams.windows import TumblingWindows


def count(acc):
    return (acc or 0) + 1


def test_event_is_assigned_to_the_window_that_contains_it():
    w = TumblingWindows(60, 30)
    assert w.start_of(120.0) == 120.0
    assert w.start_of(179.999) == 120.0
    assert w.start_of(180.0) == 180.0


def test_negative_times_floor_down():
    assert TumblingWindows(60, 0).start_of(-1.0) == -60.0


def test_window_stays_open_through_its_grace_period():
    w = TumblingWindows(60, 30)
    w.add("S1", 10, count)
    w.add("S1", 89.9, count)  # watermark just short of 0 + 60 + 30
    assert w.close_due() == []
    assert w.add("S1", 59, count) == ("S1", 0.0)  # out of order but within grace


def test_window_closes_when_watermark_reaches_end_plus_grace():
    w = TumblingWindows(60, 30)
    w.add("S1", 10, count)
    w.add("S1", 20, count)
    w.add("S2", 90, count)
    assert w.close_due() == [("S1", 0.0, 2)]
    assert w.get("S2", 60.0) is not None


def test_event_for_a_closed_window_is_late_and_not_folded():
    w = TumblingWindows(60, 30)
    w.add("S1", 10, count)
    w.add("S1", 90, count)
    assert w.add("S1", 59, count) is None
    assert w.is_late(59)
    assert w.get("S1", 60.0) == 1


def test_lateness_does_not_depend_on_batching():
    events = [("S1", t) for t in (5, 65, 130, 50, 200, 140, 100)]
    whole = TumblingWindows(60, 30)
    late_whole = [t for k, t in events if whole.add(k, t, count) is None]
    split = TumblingWindows(60, 30)
    late_split = []
    for chunk in (events[:2], events[2:5], events[5:]):
        late_split += [t for k, t in chunk if split.add(k, t, count) is None]
        split.close_due()
    assert late_whole == late_split == [50, 100]


def test_silent_partition_closes_by_advancing_the_watermark():
    w = TumblingWindows(60, 30)
    w.add("S1", 10, count)
    assert w.close_due() == []
    w.advance(95)
    assert w.close_due() == [("S1", 0.0, 1)]


def test_advance_never_moves_the_watermark_back():
    w = TumblingWindows(60, 30)
    w.add("S1", 500, count)
    w.advance(100)
    assert w.watermark == 500


def test_windows_close_oldest_first():
    w = TumblingWindows(10, 0)
    for t in (35, 5, 25, 15):
        w.open.setdefault(w.start_of(t), {})["S"] = t
    w.advance(100)
    assert [start for _, start, _ in w.close_due()] == [0.0, 10.0, 20.0, 30.0]


def test_fresh_windows_have_no_watermark():
    assert TumblingWindows(60, 30).watermark == -math.inf
