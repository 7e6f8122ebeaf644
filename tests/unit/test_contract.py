"""Event contracts: what is accepted, and the reasons given for what is not."""

import msgspec
import orjson
import pytest

from schemas.contract import Rejected, decode, encode, from_dict
from schemas.events import CitizenFloodReport, HealthCodeStatusChange, TrafficReading
from schemas.records import CityIndexPart
from schemas.reference import Intersection


def reading(**changes):
    base = {
        "sensor_id": "DET-1",
        "segment_id": "S1",
        "event_time": "2026-07-20T08:00:30Z",
        "vehicle_count": 12,
        "interval_s": 30,
        "speed_kmh": 41.5,
        "occupancy": 0.2,
    }
    base.update(changes)
    return base


def reason_for(contract, payload):
    with pytest.raises(Rejected) as caught:
        from_dict(contract, payload)
    return caught.value.reason


def test_valid_reading_decodes_with_event_time_in_epoch_seconds():
    r = from_dict(TrafficReading, reading())
    assert r.event_time == 1784534430.0
    assert r.interval_s == 30.0 and isinstance(r.interval_s, float)
    assert r.approach_id is None


def test_round_trip_through_the_wire_keeps_every_field():
    r = from_dict(TrafficReading, reading(approach_id="J1-N"))
    assert decode(TrafficReading, encode(r)) == r


def test_not_json_is_malformed():
    with pytest.raises(Rejected) as caught:
        decode(TrafficReading, b'{"sensor_id": ')
    assert caught.value.kind == "malformed"
    assert "not JSON" in caught.value.reason


def test_empty_message_is_malformed():
    with pytest.raises(Rejected) as caught:
        decode(TrafficReading, b"")
    assert caught.value.kind == "malformed"


def test_json_that_is_not_an_object_is_rejected():
    assert reason_for(TrafficReading, [1, 2]) == "TrafficReading: expected a JSON object"


def test_missing_field_is_named():
    payload = reading()
    del payload["speed_kmh"]
    assert reason_for(TrafficReading, payload) == "TrafficReading: missing field speed_kmh"


def test_negative_speed_is_out_of_range():
    assert reason_for(TrafficReading, reading(speed_kmh=-5)) == "TrafficReading.speed_kmh: must be >= 0"


def test_occupancy_above_one_is_out_of_range():
    assert reason_for(TrafficReading, reading(occupancy=1.2)) == "TrafficReading.occupancy: must be <= 1"


def test_string_where_a_number_belongs_is_mistyped():
    assert reason_for(TrafficReading, reading(vehicle_count="12")) == "TrafficReading.vehicle_count: expected a number"


def test_fractional_vehicle_count_is_rejected():
    assert reason_for(TrafficReading, reading(vehicle_count=1.5)) == "TrafficReading.vehicle_count: expected a whole number"


def test_boolean_is_not_a_number():
    assert "expected a number" in reason_for(TrafficReading, reading(vehicle_count=True))


def test_event_time_without_offset_is_rejected_as_not_utc():
    assert "has no UTC offset" in reason_for(TrafficReading, reading(event_time="2026-07-20T08:00:30"))


def test_event_time_that_is_not_a_time_is_rejected():
    assert "TrafficReading.event_time" in reason_for(TrafficReading, reading(event_time="yesterday"))


def test_empty_id_is_rejected():
    assert reason_for(TrafficReading, reading(segment_id="")) == "TrafficReading.segment_id: expected a non-empty string"


def test_a_megabyte_identifier_is_rejected_in_a_few_words_on_both_paths():
    raw = orjson.dumps(reading(sensor_id="x" * 1_000_000))
    with pytest.raises(Rejected) as caught:
        decode(TrafficReading, raw)  # the fast path refuses it; the checks word the reason
    assert caught.value.reason == "TrafficReading.sensor_id: 1,000,000 characters, more than the 1,000 allowed"
    assert decode(TrafficReading, orjson.dumps(reading(sensor_id="x" * 1_000))).sensor_id == "x" * 1_000


def test_free_text_may_be_longer_where_the_contract_says_so():
    report = {"report_id": "R1", "event_time": "2026-07-20T08:00:00Z", "lat": 30.2, "lon": 120.1}
    assert decode(CitizenFloodReport, orjson.dumps({**report, "text": "w" * 4_000})).text == "w" * 4_000
    assert reason_for(CitizenFloodReport, {**report, "text": "w" * 4_001}) == (
        "CitizenFloodReport.text: 4,001 characters, more than the 4,000 allowed")


def test_colour_outside_the_three_is_rejected():
    payload = {"person_id": "p", "colour": "purple", "event_time": "2026-07-20T08:00:00Z"}
    assert reason_for(HealthCodeStatusChange, payload) == "HealthCodeStatusChange.colour: must be one of green, yellow, red"


def test_nested_records_are_validated_with_their_path():
    payload = {
        "intersection_id": "J1",
        "name": "x",
        "zone_id": "Z",
        "approaches": [{"approach_id": "A", "segment_id": "S", "phase": "NS", "lanes": 0}],
    }
    assert reason_for(Intersection, payload) == "Intersection.approaches: Approach.lanes: must be >= 1"


def test_pairs_decode_to_tuples_in_a_list_as_declared():
    part = from_dict(
        CityIndexPart,
        {"partition": 1, "window_start": "2026-07-20T08:00:00Z", "vehicle_km": 1.0, "tpi_vehicle_km": 2.0,
         "segments": 1, "top": [["S1", 7.5]]},
    )
    assert part.top == [("S1", 7.5)]


def test_nested_records_travel_with_iso_times():
    from schemas.records import ApproachFlow, FlowReport

    report = FlowReport(2, 1784534400.0, [ApproachFlow("J1", "J1-N", 1784534340.0, 1200.0)])
    wire = encode(report)
    assert b'"window_start":"2026-07-20T07:59:00.000Z"' in wire
    assert decode(FlowReport, wire) == report


@pytest.mark.parametrize("when", ["0001-01-01T00:00:10+00:01", "9999-12-31T23:59:30Z", "1969-12-31T23:59:59Z"])
def test_event_times_outside_the_representable_years_are_rejected(when):
    assert "is outside 1970-2199" in reason_for(TrafficReading, reading(event_time=when))


def test_dict_fields_are_checked_key_by_key_and_value_by_value():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Tally:
        counts: dict[str, int]

    assert from_dict(Tally, {"counts": {"a": 1, "b": 2}}) == Tally({"a": 1, "b": 2})
    with pytest.raises(Rejected, match="counts: expected a whole number"):
        from_dict(Tally, {"counts": {"a": 1.5}})
    with pytest.raises(Rejected, match="counts: expected an object"):
        from_dict(Tally, {"counts": [1, 2]})


BAD_VALUES = [None, "", "x", -1, 0, 1.5, 1e12, True, [], {}, "2026-07-20T08:00:30", "2026-07-20T08:00:30+08:00",
              "1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "DET-1"]


@pytest.mark.parametrize("field", list(reading()) + ["approach_id"])
def test_the_fast_decoder_accepts_and_builds_exactly_what_the_checks_do(field):
    import orjson

    from schemas.contract import _fast_decoder

    fast = _fast_decoder(TrafficReading)
    assert fast is not None
    variants = [reading(**{field: v}) for v in BAD_VALUES] + [{k: v for k, v in reading().items() if k != field}]
    for payload in variants:
        raw = orjson.dumps(payload)
        try:
            expected = from_dict(TrafficReading, payload)
        except Rejected:
            with pytest.raises((msgspec.ValidationError, msgspec.DecodeError, ValueError)):
                fast(raw)
            continue
        got = fast(raw)
        assert got == expected and type(got.event_time) is float, payload
        assert {f: type(getattr(got, f)) for f in reading()} == {f: type(getattr(expected, f)) for f in reading()}


def test_rounded_numbers_match_round_and_print_with_their_digits():
    import random

    from schemas.contract import rounded

    rng = random.Random(3)
    for _ in range(20_000):
        x, digits = rng.uniform(-5000, 5000), rng.choice((2, 3, 4))
        assert rounded(x, digits) == round(x, digits), (x, digits)
        assert len(repr(rounded(x, digits)).split(".")[1]) <= digits
    assert rounded(0.5, 0) == 1.0 and rounded(2.5, 0) == 3.0  # exact halves go up (round() takes them to even)


def test_the_fast_decoder_keeps_a_missing_time_at_its_default():
    import orjson

    from schemas.contract import _fast_decoder
    from schemas.webhooks import Delivery

    payload = {"delivery_id": "d1", "subscription_id": "s1", "order_key": "o", "seq": 1, "body": "{}",
               "queued_at": "2026-07-20T08:00:00Z"}
    built = _fast_decoder(Delivery)(orjson.dumps(payload))  # raises where the fast path gives up
    assert built == from_dict(Delivery, payload) and built.next_at == 0.0


def test_a_record_frozen_at_run_time_decodes_through_the_fast_path_too():
    """A stage's own record (a car park's stay) may be a frozen dataclass: it is read back from
    Redis whenever a worker takes its partition over."""
    from agents.parking import Stay
    from schemas.contract import _fast_decoder

    stay = Stay(1_784_534_400.0, "evt-1")
    assert _fast_decoder(Stay)(encode(stay)) == decode(Stay, encode(stay)) == stay


def example(tp, lo=None, hi=None):
    """A value of type `tp` that its contract accepts, none of them a default."""
    import dataclasses
    import types
    import typing

    from schemas.contract import EventTime

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return example(next(a for a in args if a is not type(None)), lo, hi)
    if origin is typing.Literal:
        return args[-1]
    if origin is list:
        return [example(args[0]), example(args[0])]
    if origin is tuple:
        return tuple(example(a) for a in args)
    if origin is dict:
        return {example(args[0]): example(args[1])}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: example(hints[f.name], f.metadata.get("lo"), f.metadata.get("hi"))
                     for f in dataclasses.fields(tp)})
    if tp is EventTime:
        return 1784534430.125  # exact to the millisecond, as times travel
    if tp is bool:
        return True
    if tp in (int, float):  # inside the field's bounds
        value = max(lo + 1, 3) if lo is not None else 3
        value = min(value, hi) if hi is not None else value
        return tp(value) if tp is int else value + 0.25 if hi is None or value + 0.25 <= hi else float(value)
    if tp is str:
        return "Z1"
    raise TypeError(tp)


def test_every_contract_comes_back_from_the_wire_equal_to_what_was_sent():
    import schemas.cap  # noqa: F401  every module that declares contracts
    import schemas.events  # noqa: F401
    import schemas.records  # noqa: F401
    import schemas.reference  # noqa: F401
    import schemas.webhooks  # noqa: F401
    from schemas.contract import DECLARED

    assert len(DECLARED) > 40
    for cls in DECLARED:
        record = example(cls)
        assert decode(cls, encode(record)) == record, cls.__name__
        assert from_dict(cls, orjson.loads(encode(record))) == record, cls.__name__
