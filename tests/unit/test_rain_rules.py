"""Rain rules: rolling totals, CMA rainstorm signals at their thresholds, hysteresis and hold."""

import pytest

from agents.rain import ZoneSignal, rolling_totals, signal_colour, step_signal
from schemas.reference import Zone
from streams.settings import Settings

S = Settings()
ZONE = Zone("Z1", "Jinshui", [(34.7, 113.6), (34.7, 113.7), (34.8, 113.7), (34.7, 113.6)])


def totals(h1=0.0, h3=0.0, h6=0.0, h12=0.0):
    return [h1, h3, h6, h12]


@pytest.mark.parametrize(
    ("t", "colour"),
    [(totals(h12=49.9), None), (totals(h12=50), "blue"), (totals(h6=50, h12=50), "yellow"),
     (totals(h3=49.9, h6=60, h12=60), "yellow"), (totals(h3=50, h6=50, h12=50), "orange"),
     (totals(h3=99.9, h6=100, h12=100), "orange"), (totals(h3=100, h6=100, h12=100), "red")],
)
def test_signals_follow_the_cma_rules(t, colour):
    assert signal_colour(t, S) == colour


def test_rolling_totals_take_readings_inside_each_horizon():
    hour = 3600.0
    history = {0.0: 5.0, 1 * hour: 7.0, 2.5 * hour: 11.0, 5 * hour: 13.0, 11.9 * hour: 17.0}
    assert rolling_totals(history, 12 * hour, S) == [17.0, 17.0, 17.0, 48.0]  # (0, 12 h]: not t=0
    assert rolling_totals(history, 11.9 * hour, S) == [17.0, 17.0, 17.0, 53.0]


def steps(series, start=0.0, step=600.0, watch=None):
    watch, out = watch or ZoneSignal(), []
    for i, t in enumerate(series):
        watch, alert = step_signal(watch, t, start + step * i, ZONE, S)
        if alert:
            out.append((alert.msg_type, alert.parameter("signal"), alert.info[0].severity))
    return watch, out


def test_escalation_is_immediate_and_keeps_one_incident():
    watch, out = steps([totals(h12=50), totals(h6=55, h12=55), totals(h3=100, h6=100, h12=100)])
    assert out == [("Alert", "blue", "Minor"), ("Update", "yellow", "Moderate"), ("Update", "red", "Extreme")]
    assert watch.incident.step == 3


def test_a_total_hovering_at_the_threshold_does_not_flap():
    _, out = steps([totals(h6=50, h12=50), totals(h6=48, h12=50), totals(h6=51, h12=51), totals(h6=45, h12=52)] * 3)
    assert out == [("Alert", "yellow", "Moderate")]


def test_stepping_down_needs_the_margin_for_the_hold_time():
    # Yellow holds at 50 mm in 6 h; margin 10: under 40 mm for 30 minutes (readings 10 minutes apart).
    _, out = steps([totals(h6=50, h12=60)] + [totals(h6=39, h12=60)] * 3)
    assert out == [("Alert", "yellow", "Moderate")]
    _, out = steps([totals(h6=50, h12=60)] + [totals(h6=39, h12=60)] * 4)
    assert out == [("Alert", "yellow", "Moderate"), ("Update", "blue", "Minor")]


def test_the_signal_is_cancelled_when_no_rule_is_met_any_more():
    watch, out = steps([totals(h3=50, h6=50, h12=50)] + [totals(h12=30)] * 4)
    assert out[-1] == ("Cancel", "cleared", "Minor") and watch.colour is None and watch.incident is None
