"""Health-code rules: colours, whereabouts, venue notices, forgetting people, zone health alerts."""

import pytest

from agents.health import (
    RECENT_SCANS,
    Person,
    ZoneHealth,
    expired,
    move,
    seen_scan,
    step_status,
    step_zone_health,
    venue_notice,
    zone_risk,
)
from schemas.cap import reference_to
from schemas.records import PersonScan, PersonStatus, Whereabouts
from schemas.reference import Venue, Zone
from streams.settings import Settings

S = Settings()
T0 = 1_780_000_000.0
TOKEN = "k1.person"
ZONE = Zone("Z1", "Gongshu", [(30.30, 120.10), (30.30, 120.20), (30.40, 120.20), (30.30, 120.10)])
SHOP = Venue("V1", "Wulin market", "Z1", "shop")
SHELTER = Venue("SH1", "Gongshu gymnasium", "Z1", "shelter", 500)


def status(colour, at, zone_id=None):
    return PersonStatus(TOKEN, colour, at, zone_id)


def statuses(person, *changes):
    for colour, at in changes:
        person = step_status(person, status(colour, at))
    return person


def scan(scan_id="scan-1", venue=SHOP, at=T0):
    return PersonScan(scan_id, TOKEN, venue.venue_id, venue.zone_id, venue.kind == "shelter", at)


# ---------------------------------------------------------------------------------------------
# step_status


def test_a_person_starts_green():
    assert Person().colour == "green" and Person().safety_code == "green"


def test_colours_change_green_yellow_red_and_back_to_green():
    person = Person()
    seen = []
    for colour, at in [("yellow", T0), ("red", T0 + 60), ("green", T0 + 120)]:
        person = step_status(person, status(colour, at))
        seen.append((person.colour, person.colour_at))
    assert seen == [("yellow", T0), ("red", T0 + 60), ("green", T0 + 120)]
    assert person.seen_at == T0 + 120


def test_an_older_status_arriving_late_does_not_overwrite_a_newer_one():
    person = statuses(Person(), ("red", T0 + 60), ("green", T0))
    assert (person.colour, person.colour_at) == ("red", T0 + 60)
    assert person.seen_at == T0 + 60  # a late event does not move the last-seen time back


def test_a_status_at_the_same_time_applies():
    person = statuses(Person(), ("yellow", T0), ("red", T0))
    assert person.colour == "red"


def test_a_status_updates_the_last_seen_time():
    person = step_status(Person(seen_at=T0), status("yellow", T0 + 3600))
    assert person.seen_at == T0 + 3600


# ---------------------------------------------------------------------------------------------
# move


def test_a_first_location_is_an_arrival_only():
    person, records = move(Person(), TOKEN, "Z1", None, T0)
    assert records == [Whereabouts("Z1", TOKEN, True, T0, None)]
    assert (person.zone_id, person.shelter_id, person.located_at) == ("Z1", None, T0)


def test_moving_zones_leaves_the_old_zone_and_arrives_in_the_new():
    person, _ = move(Person(), TOKEN, "Z1", None, T0)
    person, records = move(person, TOKEN, "Z2", None, T0 + 60)
    assert [(w.zone_id, w.arrived) for w in records] == [("Z1", False), ("Z2", True)]
    assert all(w.person_token == TOKEN and w.at == T0 + 60 for w in records)
    assert person.zone_id == "Z2"


def test_checking_in_at_a_shelter_in_the_same_zone_tells_the_zone():
    person, _ = move(Person(), TOKEN, "Z1", None, T0)
    person, records = move(person, TOKEN, "Z1", "SH1", T0 + 60)
    assert records[-1] == Whereabouts("Z1", TOKEN, True, T0 + 60, "SH1")
    # Whatever else is sent concerns only this zone: the person is never shown leaving for elsewhere.
    assert all(w.zone_id == "Z1" for w in records)
    assert (person.zone_id, person.shelter_id) == ("Z1", "SH1")


def test_leaving_a_shelter_for_another_zone():
    person, _ = move(Person(), TOKEN, "Z1", "SH1", T0)
    person, records = move(person, TOKEN, "Z2", None, T0 + 60)
    assert [(w.zone_id, w.arrived) for w in records] == [("Z1", False), ("Z2", True)]
    assert records[-1].shelter_id is None
    assert (person.zone_id, person.shelter_id) == ("Z2", None)


def test_older_location_news_is_ignored():
    person, _ = move(Person(), TOKEN, "Z2", None, T0 + 60)
    again, records = move(person, TOKEN, "Z1", None, T0)
    assert records == []
    assert again == person


def test_no_records_when_nothing_changes():
    person, _ = move(Person(), TOKEN, "Z1", None, T0)
    again, records = move(person, TOKEN, "Z1", None, T0 + 60)
    assert records == []
    assert again.zone_id == "Z1" and again.located_at == T0 + 60


# ---------------------------------------------------------------------------------------------
# venue_notice


def test_a_green_code_tells_the_venue_nothing():
    assert venue_notice(scan(), "green", SHOP) is None


def test_a_yellow_code_asks_the_venue_to_check_entry():
    notice = venue_notice(scan(), "yellow", SHOP)
    assert notice.kind == "check_entry"
    assert (notice.to, notice.to_kind, notice.zone_id) == ("V1", "venue", "Z1")
    assert notice.scan_id == "scan-1" and notice.at == T0


def test_a_red_code_asks_the_venue_to_deny_entry():
    assert venue_notice(scan(), "red", SHOP).kind == "deny_entry"


def test_a_red_code_at_a_shelter_is_checked_not_turned_away():
    assert venue_notice(scan(venue=SHELTER), "red", SHELTER).kind == "check_entry"


def test_a_venue_notice_does_not_name_the_person():
    notice = venue_notice(scan(), "red", SHOP)
    assert TOKEN not in notice.to and all(TOKEN not in text for _, text in notice.text)


def test_the_venue_notice_id_is_deterministic_per_scan():
    a, b = venue_notice(scan("scan-7"), "red", SHOP), venue_notice(scan("scan-7"), "red", SHOP)
    assert a.notice_id == b.notice_id
    assert venue_notice(scan("scan-8"), "red", SHOP).notice_id != a.notice_id


def test_the_venue_notice_is_in_chinese_and_english():
    notice = venue_notice(scan(), "yellow", SHOP)
    assert [lang for lang, _ in notice.text] == ["zh-CN", "en-US"]


# ---------------------------------------------------------------------------------------------
# expired


def test_a_green_person_unseen_for_the_ttl_is_forgotten():
    person = Person(seen_at=T0)
    assert not expired(person, T0 + S.person_ttl_s, S)  # exactly the TTL: not yet
    assert expired(person, T0 + S.person_ttl_s + 1, S)


def test_a_person_seen_recently_is_kept():
    assert not expired(Person(seen_at=T0), T0 + 3600, S)


@pytest.mark.parametrize(
    "person",
    [Person(colour="yellow", seen_at=T0), Person(colour="red", seen_at=T0),
     Person(safety_code="red", order_id="evac-1", seen_at=T0)],
)
def test_a_person_with_a_yellow_or_red_code_is_never_forgotten(person):
    assert not expired(person, T0 + 10 * S.person_ttl_s, S)


def test_a_person_never_seen_is_not_expired():
    assert not expired(Person(), T0, S)


def test_the_ttl_comes_from_settings():
    s = Settings(person_ttl_s=3600.0)
    assert expired(Person(seen_at=T0), T0 + 3601, s)
    assert not expired(Person(seen_at=T0), T0 + 3599, s)


# ---------------------------------------------------------------------------------------------
# zone_risk


@pytest.mark.parametrize(
    ("scans", "yellow", "red", "risk"),
    [(10, 0, 0, None),
     (10, 4, 0, None),  # 40 % but only 4 risky scans: under the count
     (25, 5, 0, "Moderate"),  # 5 risky, exactly 20 %
     (26, 5, 0, None),  # 5 risky but under 20 %
     (100, 0, 5, None),  # red reaches the count, but only 5 %
     (10, 3, 2, "Moderate"),  # 5 risky, 50 %, red alone under the count
     (10, 0, 5, "Severe"),  # red alone reaches the count
     (20, 2, 5, "Severe")],
)
def test_zone_risk_needs_both_the_count_and_the_share(scans, yellow, red, risk):
    assert zone_risk(scans, yellow, red, S) == risk


def test_zone_risk_thresholds_come_from_settings():
    s = Settings.of(health_risk_scans=2, health_risk_share=0.5)
    assert zone_risk(4, 2, 0, s) == "Moderate"
    assert zone_risk(5, 2, 0, s) is None
    assert zone_risk(4, 0, 2, s) == "Severe"


# ---------------------------------------------------------------------------------------------
# step_zone_health

CALM, MODERATE, SEVERE = [100, 1, 0], [20, 6, 0], [20, 0, 6]


def run_zone(windows, s=S, watch=None, start=T0):
    """Step the zone's health alert through windows of counts (scans, yellow, red)."""
    watch = watch or ZoneHealth()
    alerts = []
    for i, counts in enumerate(windows):
        watch, alert = step_zone_health(watch, counts, start + (i + 1) * s.health.window_s, ZONE, s)
        if alert is not None:
            alerts.append(alert)
    return watch, alerts


def summary(alerts):
    return [(a.msg_type, a.info[0].severity) for a in alerts]


def test_calm_windows_raise_nothing():
    watch, alerts = run_zone([CALM, CALM, CALM])
    assert alerts == [] and watch == ZoneHealth()


def test_one_risky_window_raises_with_the_default_settings():
    assert S.health.raise_s == S.health.window_s
    watch, alerts = run_zone([MODERATE])
    assert summary(alerts) == [("Alert", "Moderate")]
    assert alerts[0].parameter("scans") == "20" and alerts[0].parameter("yellow") == "6"
    assert alerts[0].info[0].category == "Health"
    assert watch.severity == "Moderate"


def test_red_codes_alone_reaching_the_count_raise_severe():
    _, alerts = run_zone([SEVERE])
    assert summary(alerts) == [("Alert", "Severe")]


def test_raising_waits_for_health_raise_s_of_risk():
    s = Settings.of(health_raise_s=3 * S.health.window_s)
    _, alerts = run_zone([MODERATE, MODERATE], s=s)
    assert alerts == []
    _, alerts = run_zone([MODERATE, MODERATE, MODERATE], s=s)
    assert summary(alerts) == [("Alert", "Moderate")]


def test_a_calm_window_restarts_the_count_to_raise():
    s = Settings.of(health_raise_s=3 * S.health.window_s)
    _, alerts = run_zone([MODERATE, MODERATE, CALM, MODERATE, MODERATE], s=s)
    assert alerts == []


def test_escalation_from_moderate_to_severe_is_an_update():
    watch, alerts = run_zone([MODERATE, SEVERE])
    assert summary(alerts) == [("Alert", "Moderate"), ("Update", "Severe")]
    assert watch.severity == "Severe"


def test_a_moderate_window_during_a_severe_alert_does_not_step_down():
    watch, alerts = run_zone([SEVERE, MODERATE, MODERATE])
    assert summary(alerts) == [("Alert", "Severe")]
    assert watch.severity == "Severe"


def test_the_alert_clears_after_health_clear_s_of_calm():
    assert S.health.clear_s == 2 * S.health.window_s
    watch, alerts = run_zone([MODERATE, CALM])
    assert summary(alerts) == [("Alert", "Moderate")]
    watch, alerts = run_zone([MODERATE, CALM, CALM])
    assert [a.msg_type for a in alerts] == ["Alert", "Cancel"]
    assert watch == ZoneHealth()


def test_a_risky_window_restarts_the_count_to_clear():
    _, alerts = run_zone([MODERATE, CALM, MODERATE, CALM])
    assert [a.msg_type for a in alerts] == ["Alert"]


def test_messages_of_one_episode_chain_by_reference():
    _, alerts = run_zone([MODERATE, SEVERE, CALM, CALM])
    assert [a.msg_type for a in alerts] == ["Alert", "Update", "Cancel"]
    assert alerts[0].references is None
    assert [a.references for a in alerts[1:]] == [reference_to(a) for a in alerts[:-1]]
    assert len({a.incidents for a in alerts}) == 1


def test_a_new_episode_after_the_cancel_gets_a_new_incident():
    watch, first = run_zone([MODERATE, CALM, CALM])
    _, second = run_zone([MODERATE], watch=watch, start=T0 + 10 * S.health.window_s)
    assert [a.msg_type for a in second] == ["Alert"]
    assert second[0].references is None
    assert second[0].incidents != first[0].incidents
    assert second[0].identifier not in {a.identifier for a in first}


def test_zone_health_messages_are_deterministic_on_replay():
    _, first = run_zone([MODERATE, SEVERE, CALM, CALM])
    _, second = run_zone([MODERATE, SEVERE, CALM, CALM])
    assert [(a.identifier, a.sent) for a in first] == [(a.identifier, a.sent) for a in second]


def test_a_scan_sent_twice_counts_once():
    person, again = seen_scan(Person(), "scan-1")
    assert not again and person.recent_scans == ["scan-1"]
    person, again = seen_scan(person, "scan-1")
    assert again and person.recent_scans == ["scan-1"]


def test_only_the_last_scans_are_remembered():
    person = Person()
    for i in range(RECENT_SCANS + 4):
        person, _ = seen_scan(person, f"scan-{i}")
    assert len(person.recent_scans) == RECENT_SCANS
    assert person.recent_scans[-1] == f"scan-{RECENT_SCANS + 3}" and "scan-0" not in person.recent_scans


def test_clearing_counts_minutes_of_calm_not_windows_when_scans_stop_for_a_while():
    # Alert in the first window; the next calm windows come an hour apart (no scans between):
    # the first calm window alone is 15 minutes of calm, the second makes it over an hour.
    w = S.health.window_s
    watch, alert = step_zone_health(ZoneHealth(), MODERATE, T0 + w, ZONE, S)
    watch, first = step_zone_health(watch, CALM, T0 + 4 * w, ZONE, S)
    assert first is None and watch.calm_since == T0 + 3 * w
    watch, second = step_zone_health(watch, CALM, T0 + 8 * w, ZONE, S)
    assert second is not None and second.msg_type == "Cancel"
