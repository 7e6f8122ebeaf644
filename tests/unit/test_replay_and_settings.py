"""Reading recordings for replay, and settings from the environment."""

import ssl

import pytest

from streams.clients import broker_credentials, kafka_auth
from streams.settings import RainstormSignal, Settings, Trigger, from_env
from streams.tools.replay import count_lines, read_events


def test_csv_columns_are_mapped_to_contract_fields_and_typed(tmp_path):
    f = tmp_path / "loops.csv"
    f.write_text("det,link,ts,n,secs,kmh,occ\nD1,S1,2026-07-20T08:00:30Z,12,30,41.5,0.2\nD2,S2,2026-07-20T08:01:00Z,3,30,,0\n")
    mapping = {"det": "sensor_id", "link": "segment_id", "ts": "event_time", "n": "vehicle_count",
               "secs": "interval_s", "kmh": "speed_kmh", "occ": "occupancy"}
    rows = list(read_events(f, mapping))
    assert rows[0] == {"sensor_id": "D1", "segment_id": "S1", "event_time": "2026-07-20T08:00:30Z",
                       "vehicle_count": 12, "interval_s": 30, "speed_kmh": 41.5, "occupancy": 0.2}
    assert "speed_kmh" not in rows[1]  # an empty cell is a missing field, for the worker to reject
    assert count_lines(f) == 2


def test_json_lines_pass_bad_lines_on_raw(tmp_path):
    f = tmp_path / "readings.jsonl"
    f.write_bytes(b'{"segment_id": "S1"}\n\n{broken\n')
    assert list(read_events(f, {})) == [{"segment_id": "S1"}, b"{broken"]
    assert count_lines(f) == 2


def test_settings_come_from_prefixed_environment_variables():
    s = from_env({"CITYBRAIN_WINDOW_S": "300", "CITYBRAIN_DTP_BANDS": "0, 0.25,0.5,0.6,0.75", "CITYBRAIN_PARTITIONS": "8"})
    assert s.window_s == 300.0 and s.partitions == 8
    assert s.dtp_bands == (0.0, 0.25, 0.5, 0.6, 0.75)
    assert s.grace_s == Settings().grace_s


def test_a_malformed_setting_stops_with_its_name():
    with pytest.raises(SystemExit, match="CITYBRAIN_WINDOW_S"):
        from_env({"CITYBRAIN_WINDOW_S": "soon"})


def test_rules_written_as_text_are_parsed_once_at_load():
    s = from_env({"CITYBRAIN_RAINSTORM_SIGNALS": "blue:12:50, orange:3:50,red:3:100",
                  "CITYBRAIN_EVACUATION_ON": "rain:red,Z7=waterlogging:severe"})
    assert s.rainstorm_signals == (RainstormSignal("blue", 12.0, 50.0), RainstormSignal("orange", 3.0, 50.0),
                                   RainstormSignal("red", 3.0, 100.0))
    assert s.evacuation_on == (Trigger("rain", "red"), Trigger("waterlogging", "severe", "Z7"))
    assert Settings(evacuation_on=("rain:red",)) == Settings()  # text or typed, the same settings


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
