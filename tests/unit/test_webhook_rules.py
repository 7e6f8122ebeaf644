"""Webhook rules: signatures, which messages a subscription takes, bodies, backoff, ordering,
address checks, the subscriptions file, and the dispatch stage's bookkeeping of outcomes."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import replace

import orjson
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agents.webhooks import (
    DeliveryQueue,
    WebhooksStage,
    check_subscription,
    load_subscriptions,
    matches,
    next_step,
    refused_address,
    retry_after_s,
)
from schemas.cap import Alert, Area, Incident, bilingual, to_xml
from schemas.contract import encode, from_dict
from schemas.records import Notice
from schemas.reference import Zone
from schemas.webhooks import Delivery, DeliveryOutcome, Subscription, payload, signature
from streams import topics
from streams.effects import Effects
from streams.reference import Reference
from streams.settings import Cap, Settings
from streams.state import Batch

S = Settings()
T0 = 1_784_534_400.0  # 2026-07-20T08:00:00Z
SECRET_A = "whsec_" + base64.b64encode(b"first secret, 24 bytes..").decode()
SECRET_B = "whsec_" + base64.b64encode(b"second secret, rotated in").decode()


def sub(**kw) -> Subscription:
    fields = {"subscription_id": "s1", "url": "https://hooks.example.com/citybrain", "secrets": [SECRET_A]}
    fields.update(kw)
    return Subscription(**fields)


def alert(event="Flood evacuation", category="Met", severity="Severe", msg_type="Alert", zone="Z1") -> Alert:
    parameters = [("zone_id", zone)] if zone else []
    info = bilingual({"en-US": ("Flooding", "Water is rising", "Leave now"), "zh-CN": ("内涝", "水位上涨", "立即撤离")},
                     category, event, "Evacuate", "Immediate", severity, "Observed", parameters, [Area("West Lake")])
    _, message = Incident("I1").message(Cap(), msg_type, T0, info)
    return message


def notice(kind="evacuate", zone="Z1") -> Notice:
    return Notice(f"n-{kind}-{zone}", "tok-P", "person", kind, T0, zone, [("en-US", "Please leave")])


def delivery(delivery_id="s1.m1", subscription_id="s1", order_key="I1", seq=0, attempt=0, next_at=T0) -> Delivery:
    return Delivery(delivery_id, subscription_id, order_key, seq, '{"type":"alert.alert"}', T0, attempt, next_at)


def headers(delivery_id: str, timestamp: int, sig: str) -> dict[str, str]:
    return {"webhook-id": delivery_id, "webhook-timestamp": str(timestamp), "webhook-signature": sig}


# ---------------------------------------------------------------------------------------------
# signature


def test_a_signed_body_verifies_with_the_standard_webhooks_library():
    body, now = '{"type":"alert.alert","data":{}}', int(time.time())
    sig = signature([SECRET_A], "s1.m1", now, body)
    assert sig.startswith("v1,") and " " not in sig
    Webhook(SECRET_A).verify(body, headers("s1.m1", now, sig))  # raises if the signature is wrong


def test_while_a_secret_is_rotated_both_sign_and_either_verifies():
    body, now = '{"type":"notice.evacuate"}', int(time.time())
    sig = signature([SECRET_A, SECRET_B], "s1.m2", now, body)
    entries = sig.split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries) and entries[0] != entries[1]
    Webhook(SECRET_A).verify(body, headers("s1.m2", now, sig))
    Webhook(SECRET_B).verify(body, headers("s1.m2", now, sig))


def test_a_receiver_with_another_secret_rejects_the_signature():
    body, now = '{"a":1}', int(time.time())
    sig = signature([SECRET_A], "s1.m1", now, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_B).verify(body, headers("s1.m1", now, sig))


def test_a_changed_body_fails_verification():
    now = int(time.time())
    sig = signature([SECRET_A], "s1.m1", now, '{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify('{"a":2}', headers("s1.m1", now, sig))


def test_a_changed_webhook_id_fails_verification():
    body, now = '{"a":1}', int(time.time())
    sig = signature([SECRET_A], "s1.m1", now, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body, headers("s1.m2", now, sig))


# ---------------------------------------------------------------------------------------------
# matches


def test_empty_filters_match_everything_in_the_subscribed_sources():
    both = sub(sources=["alerts", "notices"])
    assert matches(both, "alerts", alert())
    assert matches(both, "notices", notice())


def test_a_message_from_an_unsubscribed_source_does_not_match():
    assert not matches(sub(sources=["alerts"]), "notices", notice())
    assert not matches(sub(sources=["notices"]), "alerts", alert())


def test_the_categories_filter_picks_alerts_by_category():
    wants_met = sub(categories=["Met"])
    assert matches(wants_met, "alerts", alert(category="Met"))
    assert not matches(wants_met, "alerts", alert(category="Transport"))


def test_the_events_filter_picks_alerts_by_cap_event_name():
    wants = sub(events=["Flood evacuation"])
    assert matches(wants, "alerts", alert(event="Flood evacuation"))
    assert not matches(wants, "alerts", alert(event="Traffic congestion"))


def test_the_events_filter_picks_notices_by_kind():
    wants = sub(sources=["notices"], events=["evacuate"])
    assert matches(wants, "notices", notice(kind="evacuate"))
    assert not matches(wants, "notices", notice(kind="move_vehicle"))


def test_the_zones_filter_uses_the_alerts_zone_id_parameter():
    wants_z1 = sub(zones=["Z1"])
    assert matches(wants_z1, "alerts", alert(zone="Z1"))
    assert not matches(wants_z1, "alerts", alert(zone="Z2"))
    assert not matches(wants_z1, "alerts", alert(zone=None))  # no zone: not known to be in Z1


def test_the_zones_filter_uses_the_notices_zone():
    wants_z1 = sub(sources=["notices"], zones=["Z1"])
    assert matches(wants_z1, "notices", notice(zone="Z1"))
    assert not matches(wants_z1, "notices", notice(zone="Z2"))


@pytest.mark.parametrize("minimum, taken", [
    ("Minor", {"Minor", "Moderate", "Severe", "Extreme"}),
    ("Moderate", {"Moderate", "Severe", "Extreme"}),
    ("Severe", {"Severe", "Extreme"}),
    ("Extreme", {"Extreme"}),
])
def test_min_severity_takes_that_severity_and_worse(minimum, taken):
    wants = sub(min_severity=minimum)
    got = {sev for sev in ("Minor", "Moderate", "Severe", "Extreme") if matches(wants, "alerts", alert(severity=sev))}
    assert got == taken


def test_the_msg_types_filter_picks_alerts_by_message_type():
    only_new = sub(msg_types=["Alert"])
    assert matches(only_new, "alerts", alert(msg_type="Alert"))
    assert not matches(only_new, "alerts", alert(msg_type="Update"))
    assert not matches(only_new, "alerts", alert(msg_type="Cancel"))


@pytest.mark.parametrize("alert_only", [{"categories": ["Met"]}, {"min_severity": "Minor"}, {"msg_types": ["Alert"]}])
def test_an_alert_only_filter_excludes_notices(alert_only):
    wants = sub(sources=["alerts", "notices"], **alert_only)
    assert not matches(wants, "notices", notice())
    assert matches(wants, "alerts", alert(category="Met", severity="Extreme", msg_type="Alert"))


def test_filters_combine_so_every_one_must_hold():
    wants = sub(categories=["Met"], zones=["Z1"], min_severity="Severe")
    assert matches(wants, "alerts", alert(category="Met", zone="Z1", severity="Extreme"))
    assert not matches(wants, "alerts", alert(category="Met", zone="Z2", severity="Extreme"))
    assert not matches(wants, "alerts", alert(category="Met", zone="Z1", severity="Moderate"))


# ---------------------------------------------------------------------------------------------
# payload


def body_of(record, queued_at=T0 + 0.25, **kw) -> dict:
    return orjson.loads(payload(record, queued_at, sub(**kw)))


def test_an_alerts_body_is_typed_by_its_message_type_in_lower_case():
    assert body_of(alert(msg_type="Alert"))["type"] == "alert.alert"
    assert body_of(alert(msg_type="Update"))["type"] == "alert.update"
    assert body_of(alert(msg_type="Cancel"))["type"] == "alert.cancel"


def test_a_notices_body_is_typed_by_its_kind():
    assert body_of(notice(kind="evacuate"))["type"] == "notice.evacuate"
    assert body_of(notice(kind="checked_in"))["type"] == "notice.checked_in"


def test_the_body_timestamp_is_when_the_message_was_queued_in_iso_8601():
    assert body_of(alert(), queued_at=T0 + 0.25)["timestamp"] == "2026-07-20T08:00:00.250Z"


def test_the_body_data_is_the_records_json():
    a = alert()
    data = body_of(a)["data"]
    assert data == orjson.loads(encode(a))  # the alert as it travels on its own topic
    assert data["identifier"] == a.identifier and data["msg_type"] == "Alert" and data["incidents"] == "I1"
    assert [i["language"] for i in data["info"]] == ["en-US", "zh-CN"]
    assert data["info"][0]["parameters"] == [["zone_id", "Z1"]]
    n = notice()
    ndata = body_of(n, sources=["notices"])["data"]
    assert ndata == orjson.loads(encode(n))
    assert ndata["notice_id"] == n.notice_id and ndata["zone_id"] == "Z1" and ndata["to"] == "tok-P"
    assert ndata["at"] == "2026-07-20T08:00:00.000Z"  # times as ISO 8601, like on the wire


def test_the_cap_xml_is_in_the_body_only_when_asked_for():
    a = alert()
    assert "cap_xml" not in body_of(a, include_cap_xml=False)["data"]
    assert body_of(a, include_cap_xml=True)["data"]["cap_xml"] == to_xml(a)
    assert "cap_xml" not in body_of(notice(), include_cap_xml=True)["data"]  # a notice is no CAP message


# ---------------------------------------------------------------------------------------------
# retry_after_s


def test_retry_after_in_delta_seconds():
    assert retry_after_s("120", T0) == 120.0
    assert retry_after_s(" 30 ", T0) == 30.0


def test_retry_after_as_an_http_date_is_the_time_until_then():
    assert retry_after_s("Mon, 20 Jul 2026 08:02:00 GMT", T0) == pytest.approx(120.0)


def test_retry_after_as_a_past_date_is_no_wait():
    assert retry_after_s("Mon, 20 Jul 2026 07:59:00 GMT", T0) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "Mon, 99 Foo 2026"])
def test_retry_after_that_is_missing_or_garbage_is_none(value):
    assert retry_after_s(value, T0) is None


def test_retry_after_with_non_ascii_digit_characters_is_garbage_not_an_error():
    # "²".isdigit() is True in Python, but it is no delta-seconds (RFC 9110: ASCII digits only).
    assert retry_after_s("\u00b2", T0) is None


# ---------------------------------------------------------------------------------------------
# next_step


def step(status, attempt=0, error=None, retry_after=None, s=S, rng=None):
    return next_step(delivery(attempt=attempt), status, error, retry_after, T0, s, rng or random.Random(7))


@pytest.mark.parametrize("status", [200, 204, 299])
def test_a_2xx_answer_is_delivered(status):
    o = step(status, attempt=2)
    assert (o.outcome, o.attempt, o.status, o.at) == ("delivered", 3, status, T0)
    assert o.next_at is None


def test_410_means_the_endpoint_is_gone():
    o = step(410)
    assert (o.outcome, o.status, o.attempt) == ("gone", 410, 1)


@pytest.mark.parametrize("status", [300, 400, 404, 429, 500, 503, 199])
def test_other_statuses_are_retried_with_the_status_as_the_error(status):
    o = step(status)
    assert o.outcome == "retry" and o.status == status and o.error == f"HTTP {status}"


def test_a_connection_error_is_retried_with_its_error():
    o = step(None, error="ClientConnectorError: refused")
    assert o.outcome == "retry" and o.status is None and o.error == "ClientConnectorError: refused"


@pytest.mark.parametrize("attempt", [0, 1, 3])
def test_a_retry_waits_a_full_jitter_of_the_exponential_backoff(attempt):
    s = Settings.of(webhook_backoff_s=2.0, webhook_backoff_max_s=600.0, webhook_max_attempts=8)
    ceiling = 2.0 * 2 ** attempt  # this is attempt number attempt + 1
    rng = random.Random(42)
    waits = [step(500, attempt=attempt, s=s, rng=rng).next_at - T0 for _ in range(500)]
    assert all(0.0 <= w <= ceiling for w in waits)
    assert max(waits) > 0.9 * ceiling and min(waits) < 0.1 * ceiling  # spread over the whole range


def test_the_backoff_is_capped():
    s = Settings.of(webhook_backoff_s=2.0, webhook_backoff_max_s=10.0, webhook_max_attempts=20)
    rng = random.Random(1)
    waits = [step(500, attempt=10, s=s, rng=rng).next_at - T0 for _ in range(500)]  # 2 * 2**10 uncapped
    assert all(0.0 <= w <= 10.0 for w in waits)
    assert max(waits) > 9.0


def test_a_longer_retry_after_wins_over_the_backoff():
    s = Settings.of(webhook_backoff_s=2.0, webhook_backoff_max_s=600.0)
    o = step(429, retry_after=120.0, s=s)  # first attempt: backoff at most 2 s
    assert o.outcome == "retry" and o.next_at == T0 + 120.0


def test_a_shorter_retry_after_does_not_shorten_the_backoff():
    s = Settings.of(webhook_backoff_s=100.0, webhook_backoff_max_s=600.0)
    rng_a, rng_b = random.Random(3), random.Random(3)
    with_header = [step(503, attempt=2, retry_after=0.0, s=s, rng=rng_a).next_at for _ in range(50)]
    without = [step(503, attempt=2, retry_after=None, s=s, rng=rng_b).next_at for _ in range(50)]
    assert with_header == without


def test_retry_after_is_capped_by_the_backoff_maximum():
    s = Settings.of(webhook_backoff_s=2.0, webhook_backoff_max_s=60.0)
    o = step(503, retry_after=86_400.0, s=s)
    assert o.next_at == T0 + 60.0


def test_the_last_allowed_attempt_exhausts_the_delivery():
    s = Settings.of(webhook_max_attempts=3)
    assert step(500, attempt=1, s=s).outcome == "retry"  # attempt 2 of 3
    last = step(500, attempt=2, s=s)  # attempt 3 of 3
    assert (last.outcome, last.attempt, last.error, last.next_at) == ("exhausted", 3, "HTTP 500", None)
    assert step(None, attempt=2, error="TimeoutError", s=s).outcome == "exhausted"


def test_the_last_attempt_can_still_succeed():
    s = Settings.of(webhook_max_attempts=3)
    assert step(200, attempt=2, s=s).outcome == "delivered"


def test_attempt_numbers_count_up_from_the_deliverys_attempt():
    assert [step(500, attempt=a).attempt for a in (0, 1, 4)] == [1, 2, 5]
    o = step(500, attempt=4)
    assert (o.delivery_id, o.subscription_id, o.at) == ("s1.m1", "s1", T0)


# ---------------------------------------------------------------------------------------------
# due


def due(now: float, *ds: Delivery, disabled: frozenset[str] = frozenset()) -> list[Delivery]:
    """What a fresh queue of these deliveries hands out at `now`."""
    return DeliveryQueue(ds).take_due(now, disabled)


def test_only_the_first_message_of_an_order_key_is_due():
    first = delivery("s1.alert", order_key="I1", seq=10)
    update = delivery("s1.update", order_key="I1", seq=11)
    assert due(T0, update, first) == [first]


def test_an_update_does_not_overtake_its_alert_waiting_for_a_retry():
    first = delivery("s1.alert", order_key="I1", seq=10, attempt=1, next_at=T0 + 60)
    update = delivery("s1.update", order_key="I1", seq=11, next_at=T0)
    assert due(T0, first, update) == []
    assert due(T0 + 60, first, update) == [first]


def test_order_keys_and_subscriptions_are_independent():
    i1 = delivery("s1.a", order_key="I1", seq=5)
    i1_later = delivery("s1.b", order_key="I1", seq=6)
    i2 = delivery("s1.c", order_key="I2", seq=7)
    other_sub = delivery("s2.b", subscription_id="s2", order_key="I1", seq=6)
    got = due(T0, i1, i1_later, i2, other_sub)
    assert {d.delivery_id for d in got} == {"s1.a", "s1.c", "s2.b"}


def test_a_delivery_is_not_due_before_its_next_attempt_time():
    d = delivery(next_at=T0 + 30)
    assert due(T0 + 29.9, d) == []
    assert due(T0 + 30, d) == [d]


def test_deliveries_of_disabled_subscriptions_are_never_due():
    gone = delivery("s1.a", subscription_id="s1")
    alive = delivery("s2.a", subscription_id="s2")
    assert due(T0, gone, alive, disabled=frozenset({"s1"})) == [alive]


def test_due_deliveries_come_oldest_appointment_first():
    late = delivery("s1.a", order_key="K1", next_at=T0 - 1)
    early = delivery("s1.b", order_key="K2", next_at=T0 - 100)
    assert due(T0, late, early) == [early, late]


# ---------------------------------------------------------------------------------------------
# refused_address, check_subscription


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "api.localhost",
                                  "10.1.2.3", "192.168.0.10", "172.16.5.4", "169.254.169.254", "0.0.0.0"])
def test_loopback_private_link_local_and_unspecified_addresses_are_refused(host):
    assert refused_address(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "2001:4860:4860::8888", "hooks.example.com", "172.32.0.1"])
def test_public_addresses_and_ordinary_host_names_are_not_refused(host):
    assert refused_address(host) is None


def test_a_good_subscription_is_accepted():
    good = sub(secrets=[SECRET_A, SECRET_B])
    assert check_subscription(good) is good


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "https:///path", "https://"])
def test_a_url_that_is_not_http_or_has_no_host_is_rejected(url):
    with pytest.raises(ValueError, match="s1"):
        check_subscription(sub(url=url))


def test_a_subscription_without_secrets_is_rejected():
    with pytest.raises(ValueError, match="secret"):
        check_subscription(sub(secrets=[]))


@pytest.mark.parametrize("secret", [base64.b64encode(b"no prefix at all").decode(), "whsec_", "shh_abc"])
def test_a_secret_that_is_not_whsec_base64_is_rejected(secret):
    with pytest.raises(ValueError, match="whsec_"):
        check_subscription(sub(secrets=[SECRET_A, secret]))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook",
                                 "https://10.0.0.5/hook"])
def test_a_private_or_loopback_url_needs_allow_private(url):
    with pytest.raises(ValueError, match="allow_private"):
        check_subscription(sub(url=url))
    assert check_subscription(sub(url=url, allow_private=True)).url == url


# ---------------------------------------------------------------------------------------------
# load_subscriptions


def write_json(tmp_path, entries, name="webhooks.json"):
    path = tmp_path / name
    path.write_bytes(orjson.dumps(entries))
    return str(path)


def test_no_subscriptions_file_means_no_subscriptions():
    assert load_subscriptions("") == {}


def test_subscriptions_load_by_id_with_their_lists(tmp_path):
    path = write_json(tmp_path, [
        {"subscription_id": "ops", "url": "https://ops.example.com/hook", "secrets": [SECRET_A, SECRET_B],
         "sources": ["alerts", "notices"], "zones": ["Z1", "Z2"], "min_severity": "Severe"},
        {"subscription_id": "radio", "url": "https://radio.example.com/cap", "secrets": [SECRET_A],
         "categories": ["Met"], "include_cap_xml": True},
    ])
    subs = load_subscriptions(path)
    assert set(subs) == {"ops", "radio"}
    ops, radio = subs["ops"], subs["radio"]
    assert ops.secrets == [SECRET_A, SECRET_B] and ops.sources == ["alerts", "notices"]
    assert ops.zones == ["Z1", "Z2"] and ops.min_severity == "Severe" and ops.include_cap_xml is False
    assert radio.categories == ["Met"] and radio.include_cap_xml is True
    assert list(radio.sources) == ["alerts"]  # not given: the default
    assert radio.url == "https://radio.example.com/cap"


def test_duplicate_subscription_ids_are_refused(tmp_path):
    entry = {"subscription_id": "ops", "url": "https://ops.example.com/hook", "secrets": [SECRET_A]}
    path = write_json(tmp_path, [entry, {**entry, "url": "https://other.example.com/hook"}])
    with pytest.raises(ValueError, match="unique"):
        load_subscriptions(path)


@pytest.mark.parametrize("content", [b"[{not json", b'{"subscription_id": "x"}', b"null",
                                     b'[{"subscription_id": "x", "url": "https://a.example.com"}]'])
def test_a_malformed_subscriptions_file_is_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "broken-hooks.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken-hooks.json"):
        load_subscriptions(str(path))


def test_a_missing_subscriptions_file_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="absent.json"):
        load_subscriptions(str(tmp_path / "absent.json"))


def test_a_subscription_with_a_bad_secret_in_the_file_is_refused(tmp_path):
    path = write_json(tmp_path, [{"subscription_id": "ops", "url": "https://a.example.com", "secrets": ["plain"]}])
    with pytest.raises(ValueError, match="ops"):
        load_subscriptions(path)


# ---------------------------------------------------------------------------------------------
# WebhooksStage.on_outcome


def stage_with(*ds: Delivery) -> WebhooksStage:
    """A partition restored with these deliveries pending."""
    stage = WebhooksStage(0, Settings(), Reference(Settings()))
    stage.load({"pending": {d.delivery_id: encode(d) for d in ds}})
    return stage


def written(stage: WebhooksStage, e: Effects) -> list[list[str]]:
    """The Redis commands of the batch, once it ends."""
    stage.end_batch(e)
    return e.batch.commands


def effects() -> Effects:
    return Effects("webhooks", Batch("cb:{webhooks.0}", 0, {}))


def outcome(kind, attempt=1, delivery_id="s1.m1", subscription_id="s1", status=None, error=None, next_at=None):
    return DeliveryOutcome(delivery_id, subscription_id, attempt, kind, T0 + 5, status, error, next_at)


def dead_letters(e: Effects) -> list[dict]:
    return [orjson.loads(value) for topic, _, value, _ in e.sends if topic is topics.webhook_dead_letters]


def test_restore_reads_pending_deliveries_and_disabled_subscriptions():
    d = delivery(attempt=2, next_at=T0 + 9)
    stage = WebhooksStage(0, Settings(), Reference(Settings()))
    stage.load({"pending": {d.delivery_id: encode(d)},
                "disabled": {"s9": b"2026-07-20T08:00:00.000Z"}})
    assert stage.pending["s1.m1"].attempt == 2 and stage.pending["s1.m1"].next_at == T0 + 9
    assert set(stage.disabled) == {"s9"}


def test_a_pending_delivery_of_a_whole_alert_with_its_cap_xml_is_restored_as_it_was_saved():
    body = payload(alert(), T0, sub(include_cap_xml=True))
    assert len(body) > 1_000  # more than a text field's usual most
    d = replace(delivery(), body=body)
    stage = stage_with(d)
    assert stage.pending["s1.m1"] == d and stage.due(T0) == [d]


def test_a_delivered_outcome_removes_the_delivery():
    stage, e = stage_with(delivery(), delivery("s1.m2", seq=1)), effects()
    stage.on_outcome(outcome("delivered", status=200), e)
    assert set(stage.pending) == {"s1.m2"}
    assert ["HDEL", "cb:{webhooks.0}:pending", "s1.m1"] in written(stage, e)
    assert e.sends == []


def test_a_retry_outcome_records_the_attempt_next_time_and_error():
    stage, e = stage_with(delivery()), effects()
    stage.on_outcome(outcome("retry", status=503, error="HTTP 503", next_at=T0 + 40), e)
    d = stage.pending["s1.m1"]
    assert (d.attempt, d.next_at, d.last_error) == (1, T0 + 40, "HTTP 503")
    (command,) = written(stage, e)
    assert command[:3] == ["HSET", "cb:{webhooks.0}:pending", "s1.m1"]
    assert from_dict(Delivery, orjson.loads(command[3])).attempt == 1  # what Redis keeps matches memory


@pytest.mark.parametrize("kind", ["delivered", "retry", "exhausted"])
def test_a_stale_outcome_changes_nothing(kind):
    current = delivery(attempt=3, next_at=T0 + 100)
    stage, e = stage_with(current), effects()
    stage.on_outcome(outcome(kind, attempt=3, status=500, error="HTTP 500", next_at=T0 + 1), e)
    stage.on_outcome(outcome(kind, attempt=2, status=500, error="HTTP 500", next_at=T0 + 1), e)
    assert stage.pending == {"s1.m1": current}
    assert written(stage, e) == [] and e.sends == []


def test_an_outcome_of_an_unknown_delivery_changes_nothing():
    stage, e = stage_with(delivery()), effects()
    stage.on_outcome(outcome("exhausted", attempt=8, delivery_id="s1.gone-already"), e)
    assert set(stage.pending) == {"s1.m1"} and e.sends == [] and written(stage, e) == []


def test_an_exhausted_delivery_is_removed_and_dead_lettered():
    d = delivery(attempt=7)
    stage, e = stage_with(d), effects()
    stage.on_outcome(outcome("exhausted", attempt=8, status=500, error="HTTP 500"), e)
    assert stage.pending == {}
    assert ["HDEL", "cb:{webhooks.0}:pending", "s1.m1"] in written(stage, e)
    (dead,) = dead_letters(e)
    assert dead["delivery_id"] == "s1.m1" and dead["subscription_id"] == "s1"
    assert dead["attempts"] == 8 and dead["reason"] == "HTTP 500" and dead["last_status"] == 500
    assert dead["body"] == d.body and dead["at"] == "2026-07-20T08:00:05.000Z"
    (key,) = [k for _, k, _, _ in e.sends]
    assert key == b"s1"  # dead letters are keyed by subscription


def test_gone_disables_the_subscription_and_gives_up_all_its_deliveries():
    mine = [delivery("s1.m1", seq=0, attempt=2), delivery("s1.m2", seq=1), delivery("s1.m3", order_key="I2", seq=2)]
    other = delivery("s2.m1", subscription_id="s2")
    stage, e = stage_with(*mine, other), effects()
    stage.on_outcome(outcome("gone", attempt=3, status=410, error="HTTP 410"), e)
    assert set(stage.disabled) == {"s1"}
    assert set(stage.pending) == {"s2.m1"}
    dead = {x["delivery_id"]: x for x in dead_letters(e)}
    assert set(dead) == {"s1.m1", "s1.m2", "s1.m3"}
    assert all(x["reason"] == "endpoint gone (HTTP 410)" and x["last_status"] == 410 for x in dead.values())
    assert dead["s1.m1"]["attempts"] == 3  # the attempt that heard 410 counts
    assert dead["s1.m2"]["attempts"] == 0 and dead["s1.m3"]["attempts"] == 0  # never attempted
    assert any(c[:3] == ["HSET", "cb:{webhooks.0}:disabled", "s1"] for c in written(stage, e))


def test_gone_heard_on_a_partition_without_the_delivery_still_disables_the_subscription():
    stage, e = stage_with(delivery("s1.other", seq=4), delivery("s2.m1", subscription_id="s2")), effects()
    stage.on_outcome(outcome("gone", attempt=1, delivery_id="s1.elsewhere", status=410), e)
    assert set(stage.disabled) == {"s1"}
    assert set(stage.pending) == {"s2.m1"}
    assert [x["delivery_id"] for x in dead_letters(e)] == ["s1.other"]


def test_gone_heard_twice_gives_up_nothing_more():
    stage, e = stage_with(delivery()), effects()
    stage.on_outcome(outcome("gone", status=410), e)
    assert len(dead_letters(e)) == 1
    stage.end_batch(e)
    again = effects()
    stage.on_outcome(outcome("gone", attempt=2, status=410), again)
    assert again.sends == [] and written(stage, again) == []


def test_a_partition_hands_a_due_delivery_out_once_and_again_when_its_outcome_was_lost():
    d = delivery(next_at=T0)
    stage = stage_with(d, delivery("s2.m1", subscription_id="s2", next_at=T0 + 60))
    assert stage.due(T0) == [d] and stage.due(T0 + 1) == []  # under way: not handed out again
    stage.retry_later(d, T0 + 30)  # its outcome never reached Kafka
    assert stage.due(T0 + 29) == [] and [x.next_at for x in stage.due(T0 + 30)] == [T0 + 30]
    assert stage.pending["s1.m1"] == d  # in memory only: Redis keeps the delivery as it was
    stage.on_outcome(outcome("delivered", status=200), effects())
    stage.retry_later(d, T0 + 40)  # an outcome that did land meanwhile: nothing to try again
    assert [x.delivery_id for x in stage.due(T0 + 60)] == ["s2.m1"]


def test_the_queue_hands_a_delivery_out_once_and_the_next_in_line_after_it_is_done():
    first = delivery("s1.alert", order_key="I1", seq=10)
    update = delivery("s1.update", order_key="I1", seq=11)
    queue = DeliveryQueue([update, first])
    assert queue.take_due(T0) == [first]
    assert queue.take_due(T0 + 1) == []  # under way: not handed out again
    queue.remove(first.delivery_id)
    assert queue.take_due(T0 + 1) == [update]


def test_a_rescheduled_delivery_is_due_again_at_its_new_time_and_still_holds_its_line():
    first = delivery("s1.alert", order_key="I1", seq=10)
    update = delivery("s1.update", order_key="I1", seq=11)
    queue = DeliveryQueue([first, update])
    queue.take_due(T0)
    retry = replace(first, attempt=1, next_at=T0 + 30)
    queue.reschedule(retry)
    assert queue.take_due(T0 + 29) == []
    assert queue.take_due(T0 + 30) == [retry]


def test_a_name_resolving_to_loopback_is_refused_where_the_connection_is_made():
    import aiohttp

    from agents.webhooks import PublicResolver, RefusedAddress

    async def post() -> BaseException:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicResolver())) as session:
            try:
                await session.post("http://localhost:9/hook")
            except aiohttp.ClientConnectorError as exc:
                return exc.os_error
        raise AssertionError("the request went through")

    refused = asyncio.run(post())
    assert isinstance(refused, RefusedAddress) and "loopback" in str(refused)


def test_a_subscription_for_an_area_takes_the_alerts_that_reach_it():
    from agents.webhooks import check_subscription, matches
    from schemas.cap import circle_area, polygon

    def alert_at(area: Area) -> Alert:
        info = bilingual({"en-US": ("h", "d", "i")}, "Met", "Road waterlogging", "Avoid", "Immediate", "Severe", "Observed",
                         [("zone_id", "Z1")], [area])
        return Incident("waterlogging.P1.1").message(Cap(), "Alert", 1_784_534_400.0, info)[1]

    district = [(34.70, 113.60), (34.70, 113.70), (34.80, 113.70), (34.80, 113.60), (34.70, 113.60)]
    inside = alert_at(circle_area("Jingguang underpass", 34.75, 113.65, 0.3))
    edge = alert_at(circle_area("Just outside", 34.75, 113.7025, 0.3))  # 0.23 km east of the line: its circle reaches in
    away = alert_at(circle_area("Far away", 34.90, 113.90, 0.3))
    zone = alert_at(Area("Erqi", [polygon([(34.79, 113.69), (34.79, 113.80), (34.85, 113.80), (34.85, 113.69)])]))
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    base = {"subscription_id": "s", "url": "https://ops.example.gov/h", "secrets": [secret]}
    by_area = check_subscription(from_dict(Subscription, {**base, "area": [list(p) for p in district]}))
    assert [matches(by_area, "alerts", a) for a in (inside, edge, away, zone)] == [True, True, False, True]
    by_circle = check_subscription(from_dict(Subscription, {**base, "near": [34.75, 113.65, 1000]}))
    assert [matches(by_circle, "alerts", a) for a in (inside, edge, away, zone)] == [True, False, False, False]
    # A notice is where its zone is: one of a zone the area reaches, not one of a zone far off or unknown.
    by_area = replace(by_area, sources=["alerts", "notices"])
    told = Notice("n", "k1.a", "person", "evacuate", 0.0, "Z1", [("en-US", "go")])
    jinshui = Zone("Z1", "Jinshui", [(34.72, 113.62), (34.72, 113.66), (34.76, 113.66), (34.72, 113.62)])
    far = Zone("Z1", "Far", [(35.72, 114.62), (35.72, 114.66), (35.76, 114.66), (35.72, 114.62)])
    assert [matches(by_area, "notices", told, z) for z in (jinshui, far, None)] == [True, False, False]
    for bad in ({"area": [list(p) for p in district[:2]]}, {"area": [[0, 0], [1, 1], [1, 0], [0, 1]]},
                {"near": [34.75, 113.65, 0]}):
        with pytest.raises(ValueError):
            check_subscription(from_dict(Subscription, {**base, **bad}))
