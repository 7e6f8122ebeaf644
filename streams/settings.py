"""The one settings object, loaded from the environment: the runtime's own fields, then one
group per domain (`settings.parking.free_s`).

Every setting is a variable `CITYBRAIN_<NAME>`: a runtime field's name, or its group's prefix and
the field's name (`CITYBRAIN_PARKING_FREE_S`), or the name a field gives itself with `named`
where the variable is older than the groups (`CITYBRAIN_RAINSTORM_SIGNALS`). Tuples are
comma-separated. Defaults are the standards in the domain notes: GB/T 33171 for traffic, Webster
for signals. Values written as text (`blue:12:50`, `zone_id=rain:red`) are parsed once, when the
settings are made, and a bad one stops the worker at start with the variable's name.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import ClassVar, NamedTuple

from schemas.cap import Severity, Urgency

PREFIX = "CITYBRAIN_"


class RainstormSignal(NamedTuple):
    """A rainstorm signal's rule, `colour:hours:mm`: this much rain within this many hours."""

    colour: str
    hours: float
    mm: float

    @classmethod
    def parse(cls, text: str) -> RainstormSignal:
        colour, hours, mm = _parts(text, ":", 3, "colour:hours:mm")
        return cls(colour, float(hours), float(mm))


class Trigger(NamedTuple):
    """What sets a zone's orders off, `kind:level` (a rain signal colour or a waterlogging level
    reached by one of its gauges or points), or `zone_id=kind:level` for that zone alone."""

    kind: str
    level: str
    zone_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> Trigger:
        zone_id, _, rule = text.rpartition("=")
        kind, level = _parts(rule, ":", 2, "kind:level or zone_id=kind:level")
        if kind not in ("rain", "waterlogging"):
            raise ValueError(f"{text!r}: the kind is rain or waterlogging")
        return cls(kind, level, zone_id or None)


def _parts(text: str, separator: str, count: int, shape: str) -> list[str]:
    parts = [p.strip() for p in text.split(separator)]
    if len(parts) != count or not all(parts):
        raise ValueError(f"{text!r} is not {shape}")
    return parts


def named(variable: str, default: typing.Any) -> typing.Any:
    """A field whose variable does not follow its group's prefix: the name it always had."""
    return field(default=default, metadata={"variable": variable})


@dataclass(frozen=True)
class Traffic:
    prefix: ClassVar[str] = ""
    # Traffic performance index (GB/T 33171-2016): DTP lower bounds of the five bands.
    dtp_bands: tuple[float, ...] = (0.0, 0.3, 0.5, 0.6, 0.7)
    ranking_size: int = 20
    city_history_windows: int = 1440  # windows of city index kept in Redis


@dataclass(frozen=True)
class Congestion:
    # Congestion alerts: TPI at which a level counts, windows in a row to raise, and the margin
    # and windows in a row below (threshold - margin) to clear.
    prefix: ClassVar[str] = "congestion_"
    moderate_tpi: float = 6.0
    severe_tpi: float = 8.0
    raise_s: float = 180.0  # congested this long (event time) raises an alert...
    clear_margin_tpi: float = 1.0
    clear_s: float = 120.0  # ...calm by the margin this long clears it


@dataclass(frozen=True)
class Signals:
    # Webster signal timing.
    prefix: ClassVar[str] = ""
    saturation_flow_vphpl: float = 1800.0
    cycle_min_s: float = 30.0
    cycle_max_s: float = 180.0
    oversaturated_flow_ratio: float = 0.9
    # Windows behind the newest final one for which a late approach flow still revises a plan.
    revision_windows: int = named("signal_revision_windows", 60)


@dataclass(frozen=True)
class Rain:
    # Rainstorm signals (CMA): colour:hours:mm, rolling rainfall at a gauge or zone; lowest first.
    prefix: ClassVar[str] = "rain_"
    signals: tuple[RainstormSignal, ...] = named("rainstorm_signals", (
        RainstormSignal("blue", 12, 50), RainstormSignal("yellow", 6, 50), RainstormSignal("orange", 3, 50),
        RainstormSignal("red", 3, 100)))
    clear_margin_mm: float = 10.0  # a signal steps down only this far under its rule...
    hold_s: float = 1800.0  # ...held this long
    horizons_h: tuple[float, ...] = (1.0, 3.0, 6.0, 12.0)  # rolling totals kept per gauge and zone
    # A gauge this far behind the newest reading of the gauges on its partition has gone silent:
    # its zone stops counting it, so a dead gauge does not hold a signal up.
    gauge_silent_s: float = 1800.0

    def __post_init__(self) -> None:
        _parse_rules(self, "signals", RainstormSignal)


@dataclass(frozen=True)
class Waterlogging:
    # Road waterlogging at monitored points (GB 51222 watch, Beijing warning and closure lines,
    # Qingdao severe), in cm above the lowest road point.
    prefix: ClassVar[str] = ""
    levels_cm: tuple[float, ...] = named("waterlogging_levels_cm", (15.0, 20.0, 27.0, 30.0))
    clear_margin_cm: float = named("waterlogging_clear_margin_cm", 3.0)  # a level clears only this far below its line...
    hold_s: float = named("waterlogging_hold_s", 600.0)  # ...held this long, so a depth hovering at a line does not flap
    rise_alert_cm: float = 10.0  # a rise this large...
    rise_window_s: float = 1800.0  # ...within this long warns even below the watch line
    depth_max_plausible_cm: float = 300.0  # hard limit: beyond it a reading is unreliable (a faulty sensor)
    # Quality checks in the manner of Delft-FEWS validation: a reading past the soft limit, or
    # rising or falling faster than water does (0 to 280 cm in one reading is a spike, not a
    # flood), is doubtful and sets nothing off until a second consistent reading or a resident's
    # report confirms it.
    depth_soft_max_cm: float = 150.0
    max_rise_cm_per_min: float = 30.0  # an underpass can fill fast; a sensor spike is faster still
    max_fall_cm_per_min: float = 30.0
    sensor_stuck_s: float = 3600.0  # a non-zero depth within the flat band this long is a stuck sensor, not water
    flat_band_cm: float = 0.5
    sensor_silent_s: float = 900.0  # a point silent this long while others report is stale, not dry
    # A point whose water comes up to the watch line while at least `neighbours_min` points
    # within `neighbour_radius_m` report no water at all (under `neighbour_dry_cm`) is doubtful.
    neighbour_radius_m: float = 1000.0
    neighbours_min: int = 2
    neighbour_dry_cm: float = 1.0


@dataclass(frozen=True)
class Nowcast:
    # Each monitored point's depth ahead, from its recent rise and the rain over its zone, with a
    # response to rain learned from its own readings (agents/nowcast.py), starting from these.
    prefix: ClassVar[str] = "nowcast_"
    horizons_min: tuple[float, ...] = (15.0, 30.0, 60.0)
    response_cm_per_mm: float = 0.5  # depth gained per mm of rain, for a point with no history
    drain_cm_h: float = 10.0  # how fast its water drains once the rain stops
    learning_rate: float = 0.2  # how far each reading moves the learned response
    rain_min_mm_h: float = 1.0  # lighter rain than this teaches drainage, not response
    trend_weight: float = 0.5  # the recent rise's share in the forecast rate; the rest is the rain's
    warn_from: str = "closure"  # the lowest line warned of before it is crossed...
    warn_within_min: float = 20.0  # ...when predicted this soon, twice running (a storm seldom holds for an hour)
    update_shift_s: float = 600.0  # a predicted crossing that moves this much is updated...
    hold_s: float = 600.0  # ...and one no longer predicted this long is cancelled


@dataclass(frozen=True)
class Cameras:
    # Road cameras' water detections: one this sure corroborates the point it looks at as a
    # resident's report does, and a clear view speaks against a lone doubtful reading; at a road
    # with no depth sensor, detections weighing `raise_weight` (their confidences added up) within
    # `window_s` raise a Likely alert, cleared after `clear_s` of clear views.
    prefix: ClassVar[str] = "camera_"
    min_confidence: float = 0.6
    raise_weight: float = 1.5
    window_s: float = 600.0
    clear_s: float = 600.0


@dataclass(frozen=True)
class Reports:
    # Residents' reports: within this distance they corroborate a monitored point; elsewhere this
    # many in one grid cell within the window raise a Likely alert, cleared after a quiet spell.
    prefix: ClassVar[str] = "report_"
    radius_m: float = 300.0
    cell_deg: float = 0.005  # about 500 m
    cluster_size: int = 3
    window_s: float = 1800.0
    clear_s: float = 3600.0


@dataclass(frozen=True)
class Health:
    # Health codes: per zone, yellow and red scans in a window, and how many of them (and what
    # share of all scans) make the zone a risk; windows in a row to raise and to clear.
    prefix: ClassVar[str] = "health_"
    window_s: float = 900.0
    grace_s: float = 300.0  # scans reach a zone from every person partition: a longer grace
    risk_scans: int = 5
    risk_share: float = 0.2
    raise_s: float = 900.0  # a risk over this long (event time) raises an alert...
    clear_s: float = 1800.0  # ...calm this long clears it


@dataclass(frozen=True)
class Parking:
    # Parking (FIWARE OffStreetParking statuses; Shoup's 85 % target as the clearing line).
    prefix: ClassVar[str] = "parking_"
    almost_full: float = 0.9
    clear: float = 0.85
    rate_window_s: float = 900.0  # net arrivals over this long give the minutes until full
    free_s: float = 900.0  # free stay before billing starts
    billing_unit_s: float = 3600.0  # billed per started unit
    stay_max_s: float = 7 * 86_400.0  # an open stay this old is a missed exit
    dedupe_s: float = 3600.0  # event ids remembered this long to drop a gateway's resends


@dataclass(frozen=True)
class Orders:
    # Floods and what they set off in a zone: `kind:level` (rain signal colour or waterlogging
    # level) reached by any gauge or point of the zone; `zone_id=kind:level` entries replace the
    # defaults for that zone.
    prefix: ClassVar[str] = ""
    garage_closure_on: tuple[Trigger, ...] = (Trigger("rain", "orange"), Trigger("waterlogging", "severe"))
    evacuation_on: tuple[Trigger, ...] = (Trigger("rain", "red"),)

    def __post_init__(self) -> None:
        _parse_rules(self, "garage_closure_on", Trigger)
        _parse_rules(self, "evacuation_on", Trigger)


@dataclass(frozen=True)
class Webhooks:
    # Webhooks (Standard Webhooks): subscriptions in a JSON file (a list of schemas/webhooks.py
    # Subscription objects); each attempt times out, failures back off exponentially with jitter
    # up to a cap, and after `max_attempts` the delivery becomes a dead letter.
    prefix: ClassVar[str] = "webhook_"
    file: str = named("webhooks_file", "")
    timeout_s: float = 15.0
    max_attempts: int = 8
    backoff_s: float = 2.0
    backoff_max_s: float = 600.0
    concurrency: int = 8  # attempts in flight per endpoint
    # Bearer tokens of the operators' API: the subscriptions at /webhooks/subscriptions and the
    # draft alerts at /alerts/drafts (none: the API is closed). Never logged.
    api_tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Cap:
    # How the city's CAP messages are signed off and how long each stands (OASIS CAP 1.2, and the
    # Google Public Alerts guidelines aggregators follow): every message expires unless a later one
    # replaces it, and an ended incident's all clear expires soon after.
    prefix: ClassVar[str] = "cap_"
    sender: str = named("alert_sender", "citybrain")  # no spaces, commas, < or &
    sender_name: str = "citybrain"  # the name people read
    status: str = "Actual"  # Test: every message is a test, which aggregators keep from the public
    web: str = ""  # a page with more on the city's warnings
    contact: str = ""  # whom to ask about a message
    event_code: str = "citybrain"  # the eventCode's valueName; its value names the kind of event
    expires_s: float = 21_600.0
    all_clear_expires_s: float = 3_600.0
    # Where the CAP feed is published (http://city.example/): its links are made from it, else
    # from the address a reader asked (a proxy's, a worker's).
    feed_url: str = ""

    def __post_init__(self) -> None:
        if self.status not in ("Actual", "Exercise", "Test"):
            raise ValueError(f"cap_status: {self.status!r} is Actual, Exercise or Test")
        if any(c in self.sender for c in " ,<&"):
            raise ValueError(f"alert_sender: {self.sender!r} has a space, comma, < or &")


@dataclass(frozen=True)
class Approval:
    # Public alerts an operator approves before they leave: a message of these severities and
    # urgencies waits as a CAP Draft until it is approved or rejected at /alerts/drafts (a token of
    # `webhook_api_tokens`). None listed: every alert goes straight out. Operational (Restricted)
    # alerts never wait, nor by default warnings of what is expected (a forecast's lead time is
    # its worth): `approval_urgencies=Immediate,Expected` holds those too.
    prefix: ClassVar[str] = "approval_"
    severities: tuple[str, ...] = ()  # Severe,Extreme
    urgencies: tuple[str, ...] = ("Immediate",)

    def __post_init__(self) -> None:
        for name, allowed in (("severities", typing.get_args(Severity)), ("urgencies", typing.get_args(Urgency))):
            wrong = [v for v in getattr(self, name) if v not in allowed]
            if wrong:
                raise ValueError(f"approval_{name}: {', '.join(wrong)} not among {', '.join(allowed)}")


def _parse_rules(group: typing.Any, name: str, rule: typing.Any) -> None:
    """Rules given as text (the environment, a test) are parsed here, once."""
    value = getattr(group, name)
    items = (value,) if isinstance(value, str) else value
    try:
        parsed = tuple(rule.parse(x) if isinstance(x, str) else rule(*x) for x in items)
    except ValueError as exc:
        f = next(f for f in dataclasses.fields(group) if f.name == name)
        raise ValueError(f"{_variable(group, f)}: {exc}") from None
    object.__setattr__(group, name, parsed)


@dataclass(frozen=True)
class Settings:
    """The runtime's own settings, then one group per domain (`settings.rain.hold_s`). The
    variables stay flat: every field of every group is `CITYBRAIN_<FIELD>`, and `Settings.of`
    takes the same flat names."""

    # Where things run.
    kafka_bootstrap: str = "127.0.0.1:19092"
    redis_url: str = field(default="redis://127.0.0.1:16379/0", repr=False)  # may carry a password
    app_id: str = "citybrain"
    topic_prefix: str = ""  # lets several cities (or test runs) share one broker
    key_prefix: str = "cb"  # Redis key prefix
    partitions: int = 4
    web_port: int = 6066
    # Who may connect (streams/clients.py). Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL,
    # SASL by SCRAM-SHA-512 (or SCRAM-SHA-256, PLAIN), and the CA file that signed the broker's
    # certificate (the system's CAs when empty). Redis: an ACL user, and a CA file for a
    # `rediss://` URL. Secrets can be given as files: `CITYBRAIN_KAFKA_PASSWORD_FILE=/run/secrets/x`.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_ca_file: str = ""
    redis_cluster: bool = False  # the URL names one node of a Redis Cluster; the client finds the rest
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    redis_ca_file: str = ""
    session_timeout_s: float = 10.0  # consumer-group session: how soon a dead worker's partitions move

    # Batching: events taken per await, and how long to wait for a batch to fill.
    batch_max: int = 10_000
    batch_within_s: float = 0.05

    # Event-time windows.
    window_s: float = 60.0
    grace_s: float = 30.0
    # A partition silent this long (wall clock) has its watermark advanced by the silence, so
    # windows of sensors that stopped reporting still close.
    idle_close_s: float = 10.0
    # An event time further than this ahead of the broker's record time is rejected: one clock
    # in the future would otherwise make every later event late.
    max_ahead_s: float = 300.0
    # A reading this far ahead of its partition's watermark moves it only when the broker's clock
    # has moved as far since (a feed resuming after a pause), another sensor's reading agrees, or
    # no other sensor has a window open; else it is dead-lettered, so that one wild clock cannot
    # make its neighbours' readings late.
    max_skew_s: float = 3600.0
    # Stages new to a running city: where Kafka no longer keeps the start of their topics (which
    # other stages read before), they start from what it keeps instead of refusing, as a state
    # that lost its input would.
    fresh_stages: tuple[str, ...] = ()

    # Reference data is re-read at most this often when an event names an unknown id.
    reference_refresh_s: float = 5.0

    # Privacy (PIPL art. 51, GB/T 35273 §6.2): personal identifiers become keyed HMAC tokens as
    # they are read. `key_id:secret` entries, the current key first; older keys stay listed while
    # a rotation is under way. Never logged.
    privacy_keys: tuple[str, ...] = field(default=(), repr=False)
    person_ttl_s: float = 14 * 86_400.0  # a person's state is forgotten this long after their last event

    traffic: Traffic = Traffic()
    congestion: Congestion = Congestion()
    signals: Signals = Signals()
    rain: Rain = Rain()
    waterlogging: Waterlogging = Waterlogging()
    nowcast: Nowcast = Nowcast()
    cameras: Cameras = Cameras()
    reports: Reports = Reports()
    health: Health = Health()
    parking: Parking = Parking()
    orders: Orders = Orders()
    webhooks: Webhooks = Webhooks()
    cap: Cap = Cap()
    approval: Approval = Approval()

    def __post_init__(self) -> None:
        if self.approval.severities and not self.webhooks.api_tokens:
            raise ValueError("approval_severities: drafts would wait for operators that no token lets in: "
                             "set CITYBRAIN_WEBHOOK_API_TOKENS too")
        colours = [s.colour for s in self.rain.signals]
        for name in ("garage_closure_on", "evacuation_on"):
            for t in getattr(self.orders, name):
                if t.kind == "rain" and t.level not in colours:
                    raise ValueError(f"{name}: {t.level!r} is not a rainstorm signal ({', '.join(colours)})")

    @classmethod
    def of(cls, **values: typing.Any) -> Settings:
        """Settings from the variables' names in small letters (`rain_hold_s`), each put in its group."""
        groups: dict[str, dict[str, typing.Any]] = {name: {} for name in _groups()}
        for variable, group, f, _ in _variables():
            if group and variable in values:
                groups[group][f.name] = values.pop(variable)
        return cls(**values, **{name: tp(**groups[name]) for name, tp in _groups().items()})


def _groups() -> dict[str, typing.Any]:
    return {name: tp for name, tp in typing.get_type_hints(Settings).items() if dataclasses.is_dataclass(tp)}


def _variables() -> typing.Iterator[tuple[str, str, dataclasses.Field, typing.Any]]:
    """Every setting as (variable name in small letters, its group or "", its field, its type)."""
    for group, owner in (("", Settings), *_groups().items()):
        hints = typing.get_type_hints(owner)
        for f in dataclasses.fields(owner):
            if not dataclasses.is_dataclass(hints[f.name]):
                yield _variable(owner, f), group, f, hints[f.name]


def _variable(owner: typing.Any, f: dataclasses.Field) -> str:
    return f.metadata.get("variable", getattr(owner, "prefix", "") + f.name)


def _parse(tp: typing.Any, text: str) -> typing.Any:
    if typing.get_origin(tp) is tuple:
        (item,) = typing.get_args(tp)[:1]
        read = getattr(item, "parse", item)  # a rule written as text, or a plain value
        return tuple(read(x.strip()) for x in text.split(",") if x.strip())
    if tp is bool:
        return text.strip().lower() in ("1", "true", "yes", "on")
    return tp(text)


def from_env(environ: typing.Mapping[str, str] = os.environ) -> Settings:
    """Settings with every `CITYBRAIN_*` variable applied. A secret (a field kept out of the
    settings' repr) can also be read from the file named by `CITYBRAIN_<NAME>_FILE`."""
    values = {}
    for variable, _, f, tp in _variables():
        name = PREFIX + variable.upper()
        if name in environ:
            text, shown = environ[name], f"{name}={environ[name]!r}" if f.repr else name
        elif not f.repr and name + "_FILE" in environ:
            path = environ[name + "_FILE"]
            shown = f"{name}_FILE={path!r}"
            try:
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise SystemExit(f"{shown}: {exc.strerror}") from None
        else:
            continue
        try:
            values[variable] = _parse(tp, text)
        except ValueError as exc:
            raise SystemExit(f"{shown}: {exc}" if f.repr else f"{shown}: not a valid value") from None
    try:
        return Settings.of(**values)
    except ValueError as exc:  # a rule that names what no other rule has (a colour, a level)
        field_name, _, reason = str(exc).partition(": ")
        raise SystemExit(f"{PREFIX}{field_name.upper()}: {reason}") from None


@cache
def settings() -> Settings:
    """The process's settings, read once."""
    return from_env()
