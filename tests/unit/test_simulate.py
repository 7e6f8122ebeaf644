"""The synthetic city and its scenarios: reproducible, and shaped as the scenarios promise."""

from agents.rain import rolling_totals, signal_colour
from schemas.contract import decode, encode
from schemas.events import WaterDepthReading
from streams.settings import Settings
from streams.tools.simulate import Rainstorm, RushHour, build_city

START = 1_784_534_400.0


def test_the_same_seed_builds_the_same_city_and_events():
    a, b = build_city(3), build_city(3)
    assert a == b
    assert list(RushHour(a, START, 1800).events()) == list(RushHour(b, START, 1800).events())
    assert build_city(4).segments != a.segments


def test_the_rainstorm_brings_every_signal_level_to_some_zone_and_none_to_others():
    storm = Rainstorm(build_city(), START, 5400)
    s = Settings()
    colours = {}
    for zone in storm.city.zones:
        history = {START + 300 * k: storm.rain_5min(zone, START + 300 * k) for k in range(1, 19)}
        colours[zone] = signal_colour(rolling_totals(history, START + 5400, s), s)
    assert set(colours.values()) == {"red", "orange", None}


def test_the_rainstorm_breaks_one_sensor_then_silences_it():
    storm = Rainstorm(build_city(), START, 5400)
    broken = storm.failing_point()
    depths = [(t, r.depth_cm) for t, role, key, r in storm.events() if role == "water_depths" and key == broken]
    assert any(d == -999.0 for _, d in depths)
    assert max(t for t, _ in depths) - START <= 3000  # nothing after 50 minutes
    # An impossible depth is still a well-formed event: the flood brain judges the sensor.
    assert decode(WaterDepthReading, encode(WaterDepthReading("W", broken, START, -999.0))).depth_cm == -999.0


def test_the_rainstorm_has_residents_reporting_near_points_and_where_none_is():
    from agents.reports import nearest_point

    storm = Rainstorm(build_city(), START, 5400)
    s = Settings()
    reports = [r for _, role, _, r in storm.events() if role == "flood_reports"]
    distances = [nearest_point(storm.city.points, r.lat, r.lon)[1] for r in reports]
    assert any(d <= s.reports.radius_m for d in distances)
    assert sum(d > s.reports.radius_m for d in distances) >= s.reports.cluster_size
