"""Reading recordings for replay, and settings from the environment."""

import re
import ssl
from pathlib import Path

import pytest

from streams.clients import broker_credentials, kafka_auth
from streams.settings import RainstormSignal, Settings, Trigger, _variables, from_env
from streams.tools.replay import column_mapping, count_lines, in_utc, read_events

ROOT = Path(__file__).resolve().parents[2]


def test_csv_columns_are_mapped_to_contract_fields_and_typed(tmp_path):
    f = tmp_path / "loops.csv"
    f.write_text("det,link,ts,n,secs,kmh,occ\nD1,S1,2026-07-20T08:00:30Z,12,30,41.5,0.2\nD2,S2,2026-07-20T08:01:00Z,3,30,,0\n")
    mapping = column_mapping(["det=sensor_id", "link=segment_id", "ts=event_time", "n=vehicle_count",
                              "secs=interval_s", "kmh=speed_kmh", "occ=occupancy"])
    rows = list(read_events(f, mapping))
    assert rows[0] == {"sensor_id": "D1", "segment_id": "S1", "event_time": "2026-07-20T08:00:30Z",
                       "vehicle_count": 12, "interval_s": 30, "speed_kmh": 41.5, "occupancy": 0.2}
    assert "speed_kmh" not in rows[1]  # an empty cell is a missing field, for the worker to reject
    assert count_lines(f) == 2


def test_a_column_mapping_converts_units_and_local_times_become_utc(tmp_path):
    from zoneinfo import ZoneInfo

    f = tmp_path / "probes.csv"
    f.write_text("link,ts,mph,n\nS1,2026-07-20 08:00:30,25,12\n")
    (row,) = read_events(f, column_mapping(["link=segment_id", "ts=event_time", "mph=speed_kmh*1.609344", "n=vehicle_count"]))
    assert row["speed_kmh"] == pytest.approx(40.2336) and row["vehicle_count"] == 12
    shanghai = ZoneInfo("Asia/Shanghai")
    assert in_utc(row["event_time"], shanghai) == "2026-07-20T00:00:30.000Z"  # 08:00:30 in Shanghai
    assert in_utc("2026-07-20T08:00:30+02:00", shanghai) == "2026-07-20T08:00:30+02:00"  # has its own offset
    assert in_utc("yesterday", shanghai) == "yesterday" and in_utc(1784534400, shanghai) == 1784534400
    for bad in (["ts"], ["ts=event_time*fast"], ["=event_time"], ["mph=speed_kmh*nan"]):
        with pytest.raises(SystemExit):
            column_mapping(bad)


def test_json_lines_pass_bad_lines_on_raw(tmp_path):
    f = tmp_path / "readings.jsonl"
    f.write_bytes(b'{"segment_id": "S1"}\n\n{broken\n')
    assert list(read_events(f, {})) == [{"segment_id": "S1"}, b"{broken"]
    assert count_lines(f) == 2


def test_settings_come_from_prefixed_environment_variables():
    s = from_env({"CITYBRAIN_WINDOW_S": "300", "CITYBRAIN_DTP_BANDS": "0, 0.25,0.5,0.6,0.75", "CITYBRAIN_PARTITIONS": "8"})
    assert s.window_s == 300.0 and s.partitions == 8
    assert s.traffic.dtp_bands == (0.0, 0.25, 0.5, 0.6, 0.75)
    assert s.grace_s == Settings().grace_s


def test_a_malformed_setting_stops_with_its_name():
    with pytest.raises(SystemExit, match="CITYBRAIN_WINDOW_S"):
        from_env({"CITYBRAIN_WINDOW_S": "soon"})


def test_a_domain_setting_is_read_by_its_variable_into_its_group():
    s = from_env({"CITYBRAIN_PARKING_FREE_S": "1800", "CITYBRAIN_CONGESTION_RAISE_S": "300",
                  "CITYBRAIN_WATERLOGGING_HOLD_S": "60", "CITYBRAIN_SENSOR_SILENT_S": "300",
                  "CITYBRAIN_SIGNAL_REVISION_WINDOWS": "7", "CITYBRAIN_WEBHOOKS_FILE": "subs.json"})
    assert (s.parking.free_s, s.congestion.raise_s, s.waterlogging.hold_s) == (1800.0, 300.0, 60.0)
    assert (s.waterlogging.sensor_silent_s, s.signals.revision_windows, s.webhooks.file) == (300.0, 7, "subs.json")
    assert s.parking.billing_unit_s == Settings().parking.billing_unit_s  # the rest of the group keeps its defaults
    assert Settings.of(parking_free_s=1800.0, congestion_raise_s=300.0, waterlogging_hold_s=60.0,
                       sensor_silent_s=300.0, signal_revision_windows=7, webhooks_file="subs.json") == s


def test_every_variable_in_the_readme_is_a_setting():
    documented = set(re.findall(r"`CITYBRAIN_([A-Z0-9_]+?)(?:\[_FILE\])?`", (ROOT / "README.md").read_text()))
    stack = {"KAFKA_PORT", "KAFKA_SECURE_PORT", "REDIS_PORT", "REDIS_TLS_PORT", "REDIS_CLUSTER_PORT", "RUN_DIR"}
    variables = {v.upper() for v, *_ in _variables()}
    assert documented - stack - variables == set()
    assert {"PARKING_FREE_S", "RAINSTORM_SIGNALS", "WEBHOOKS_FILE", "HEALTH_WINDOW_S"} <= variables


def test_rules_written_as_text_are_parsed_once_at_load():
    s = from_env({"CITYBRAIN_RAINSTORM_SIGNALS": "blue:12:50, orange:3:50,red:3:100",
                  "CITYBRAIN_EVACUATION_ON": "rain:red,Z7=waterlogging:severe"})
    assert s.rain.signals == (RainstormSignal("blue", 12.0, 50.0), RainstormSignal("orange", 3.0, 50.0),
                              RainstormSignal("red", 3.0, 100.0))
    assert s.orders.evacuation_on == (Trigger("rain", "red"), Trigger("waterlogging", "severe", "Z7"))
    assert Settings.of(evacuation_on=("rain:red",)) == Settings()  # text or typed, the same settings


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CITYBRAIN_RAINSTORM_SIGNALS", "blue:12", "is not colour:hours:mm"),
    ("CITYBRAIN_RAINSTORM_SIGNALS", "blue:twelve:50", "could not convert"),
    ("CITYBRAIN_GARAGE_CLOSURE_ON", "snow:deep", "the kind is rain or waterlogging"),
    ("CITYBRAIN_EVACUATION_ON", "rain:purple", "'purple' is not a rainstorm signal"),
])
def test_a_rule_that_cannot_be_read_stops_the_worker_at_start_with_its_name(name, value, says):
    with pytest.raises(SystemExit, match=f"{name}.*{says}"):
        from_env({name: value})


def test_a_secret_is_read_from_its_file_and_kept_out_of_sight(tmp_path):
    (tmp_path / "kafka").write_text("s3cret-kafka\n")
    s = from_env({"CITYBRAIN_KAFKA_PASSWORD_FILE": str(tmp_path / "kafka"), "CITYBRAIN_REDIS_PASSWORD": "s3cret-redis",
                  "CITYBRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CITYBRAIN_KAFKA_USERNAME": "citybrain"})
    assert (s.kafka_password, s.redis_password) == ("s3cret-kafka", "s3cret-redis")
    assert "s3cret" not in repr(s)
    auth = kafka_auth(s)
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"], auth["sasl_plain_password"]) == (
        "SASL_SSL", "SCRAM-SHA-512", "citybrain", "s3cret-kafka")
    assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert broker_credentials(s).password == "s3cret-kafka" and "s3cret" not in repr(broker_credentials(s))
    assert kafka_auth(Settings()) == {"security_protocol": "PLAINTEXT"} and broker_credentials(Settings()) is None
    with pytest.raises(SystemExit, match="CITYBRAIN_KAFKA_PASSWORD_FILE='/nowhere': No such file or directory"):
        from_env({"CITYBRAIN_KAFKA_PASSWORD_FILE": "/nowhere"})
    with pytest.raises(SystemExit, match="CITYBRAIN_KAFKA_SECURITY_PROTOCOL='TLS': one of PLAINTEXT, SSL"):
        kafka_auth(Settings(kafka_security_protocol="TLS"))
