"""Pseudonymisation: keyed tokens, normalisation, rotation, bad keys, and dead letters that name no one."""

import orjson
import pytest

from schemas.events import CitizenFloodReport, HealthCodeStatusChange, ParkingEvent
from streams.effects import Source, dead_letter
from streams.privacy import WITHHELD, Keyring
from streams.topics import topic_name

SECRET_1 = "k1:0123456789abcdef-first"
SECRET_2 = "k2:fedcba9876543210-second"
ID_NUMBER = "330106199001011234"
PLATE = "浙A12345"
T0 = 1_780_000_000.0


def keyring(*entries):
    return Keyring(entries or (SECRET_1,))


# ---------------------------------------------------------------------------------------------
# Tokens


def test_the_same_identifier_gives_the_same_token():
    assert keyring().token("person_id", ID_NUMBER) == keyring().token("person_id", ID_NUMBER)


def test_different_identifiers_give_different_tokens():
    assert keyring().token("person_id", ID_NUMBER) != keyring().token("person_id", "330106199001011235")


def test_the_same_string_of_a_different_kind_gives_a_different_token():
    assert keyring().token("person_id", "ABC123") != keyring().token("plate", "ABC123")


@pytest.mark.parametrize("written", ["浙A12345", "浙a12345", "浙A 12345", " 浙A12345 ", "浙 a 1 2 3 4 5"])
def test_spaces_and_case_do_not_change_the_token(written):
    assert keyring().token("plate", written) == keyring().token("plate", PLATE)


def test_the_token_starts_with_the_key_id_and_does_not_contain_the_identifier():
    token = keyring().token("person_id", ID_NUMBER)
    assert token.startswith("k1.")
    assert ID_NUMBER not in token
    assert ID_NUMBER[-6:] not in token  # not even the tail of it
    plate_token = keyring().token("plate", "AB1234")
    assert "ab1234" not in plate_token.lower()


def test_a_different_secret_gives_a_different_token():
    other = Keyring(("k1:another-secret-of-16+chars",))
    assert other.token("person_id", ID_NUMBER) != keyring().token("person_id", ID_NUMBER)


# ---------------------------------------------------------------------------------------------
# Rotation


def test_tokens_gives_one_token_per_key_the_current_key_first():
    rotating = keyring(SECRET_2, SECRET_1)
    tokens = rotating.tokens("person_id", ID_NUMBER)
    assert len(tokens) == 2
    assert tokens[0] == rotating.token("person_id", ID_NUMBER)
    assert tokens[0].startswith("k2.") and tokens[1].startswith("k1.")
    # The old key's token is the one people were given before the rotation.
    assert tokens[1] == keyring(SECRET_1).token("person_id", ID_NUMBER)


def test_the_current_key_is_the_first_listed():
    assert keyring(SECRET_2, SECRET_1).token("plate", PLATE) == keyring(SECRET_2).token("plate", PLATE)
    assert keyring(SECRET_2, SECRET_1).token("plate", PLATE) != keyring(SECRET_1).token("plate", PLATE)


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "entries",
    [(),  # no key at all
     ("k1-0123456789abcdef",),  # no colon
     ("k1:short",),  # secret under 16 characters
     ("k1:0123456789abcde",),  # 15 characters
     (":0123456789abcdef",),  # no key id
     ("k-1:0123456789abcdef",),  # key id not alphanumeric
     ("k.1:0123456789abcdef",),  # a dot would break the token's key id
     (SECRET_1, "k2:short")],  # one bad entry among good ones
)
def test_bad_key_configuration_is_rejected(entries):
    with pytest.raises(ValueError):
        Keyring(entries)


def test_a_secret_of_exactly_16_characters_is_accepted():
    assert Keyring(("k1:0123456789abcdef",)).token("plate", PLATE).startswith("k1.")


def test_a_secret_may_contain_colons_the_key_id_ends_at_the_first():
    ring = Keyring(("k1:0123:4567:89ab:cdef",))
    assert ring.token("plate", PLATE).startswith("k1.")


def test_the_error_message_does_not_echo_the_secret():
    with pytest.raises(ValueError) as exc:
        Keyring(("k-1:a-secret-that-must-not-leak",))
    assert "a-secret-that-must-not-leak" not in str(exc.value)


# ---------------------------------------------------------------------------------------------
# pseudonymise


def test_pseudonymise_replaces_only_the_listed_fields():
    ring = keyring()
    raw = ParkingEvent("e1", "L1", PLATE, "entry", T0)
    out = ring.pseudonymise(raw, ("plate",))
    assert out.plate == ring.token("plate", PLATE)
    assert (out.event_id, out.lot_id, out.direction, out.event_time) == ("e1", "L1", "entry", T0)
    assert raw.plate == PLATE  # the frozen original is untouched


def test_pseudonymise_tokenises_with_the_field_name_as_the_kind():
    ring = keyring()
    out = ring.pseudonymise(HealthCodeStatusChange(ID_NUMBER, "red", T0, "close contact", "Z1"), ("person_id",))
    assert out.person_id == ring.token("person_id", ID_NUMBER)
    assert (out.colour, out.reason, out.zone_id) == ("red", "close contact", "Z1")


def test_pseudonymise_leaves_none_fields_as_none():
    ring = keyring()
    report = CitizenFloodReport("r1", T0, 30.27, 120.16, 20.0, None, "water on the road")
    assert ring.pseudonymise(report, ("phone",)) == report
    with_phone = ring.pseudonymise(CitizenFloodReport("r2", T0, 30.27, 120.16, None, "13800138000"), ("phone",))
    assert with_phone.phone == ring.token("phone", "13800138000") and with_phone.depth_cm is None


# ---------------------------------------------------------------------------------------------
# Dead letters from personal topics


def health_status_source(value: bytes, key: bytes | None = ID_NUMBER.encode()) -> Source:
    return Source(topic_name("health_status"), 2, 41, key, value)


def test_a_dead_letter_from_a_personal_topic_withholds_the_personal_fields():
    raw = orjson.dumps({"person_id": ID_NUMBER, "colour": "purple", "event_time": "2026-05-28T08:00:00Z"})
    letter = dead_letter(health_status_source(raw), "colour: 'purple' is not one of green, yellow, red")
    assert ID_NUMBER not in letter.raw
    payload = orjson.loads(letter.raw)
    assert payload["person_id"] == WITHHELD
    assert payload["colour"] == "purple" and payload["event_time"] == "2026-05-28T08:00:00Z"
    assert letter.raw_encoding == "utf-8"
    assert (letter.source_topic, letter.partition, letter.offset) == (topic_name("health_status"), 2, 41)


def test_a_dead_letter_from_a_personal_topic_withholds_the_personal_key():
    raw = orjson.dumps({"person_id": ID_NUMBER, "colour": "red", "event_time": "not a time"})
    letter = dead_letter(health_status_source(raw), "bad event_time")
    assert letter.key == WITHHELD
    assert ID_NUMBER not in repr(letter)


def test_an_unreadable_event_on_a_personal_topic_is_withheld_whole():
    letter = dead_letter(health_status_source(b'{"person_id": "' + ID_NUMBER.encode() + b'", broken'), "not JSON")
    assert ID_NUMBER not in letter.raw
    assert ID_NUMBER not in repr(letter)


def test_a_dead_letter_from_a_topic_without_personal_data_keeps_its_key_and_body():
    raw = orjson.dumps({"sensor_id": "D1", "segment_id": "S1", "vehicle_count": -3})
    letter = dead_letter(Source(topic_name("traffic_readings"), 0, 7, b"S1", raw), "vehicle_count below 0")
    assert letter.key == "S1"
    assert orjson.loads(letter.raw) == orjson.loads(raw)
