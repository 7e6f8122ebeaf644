"""How an event contract is declared, decoded from the wire and rejected with a reason.

A contract is a frozen dataclass. Field types say what the wire must carry; `bounded()` adds a
range. `decode(Contract, raw)` returns an instance or raises `Rejected` with a reason an operator
can act on. Times travel as ISO 8601 strings with a UTC offset and live in memory as epoch seconds.

A contract of flat fields (text, numbers, flags, times, choices) is decoded by msgspec, which
validates types and ranges in C; a payload it refuses is decoded again by the checks below,
only to say why in the same words.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, Literal, TypeVar, Union

import msgspec
import orjson

C = TypeVar("C")

UTC = UTC
# Times the city brain accepts: far enough from year 1 and 9999 that windows stay representable.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class Rejected(ValueError):
    """An event that breaks its contract; `reason` says why in words an operator can act on."""

    def __init__(self, reason: str, kind: str = "invalid"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # a short label for counting: malformed, invalid, unknown_reference


def bounded(lo: float | None = None, hi: float | None = None, default: Any = dataclasses.MISSING):
    """A numeric field that must lie in [lo, hi]."""
    return dataclasses.field(default=default, metadata={"lo": lo, "hi": hi})


# The most characters a text field carries unless it says otherwise: an identifier, a name or a
# short text. One event that carries a megabyte in a field would otherwise travel on into keys,
# records and dead letters that Kafka refuses.
MOST_CHARACTERS = 1_000


def text(most: int, default: Any = dataclasses.MISSING):
    """A text field that may be longer than `MOST_CHARACTERS`, up to `most`."""
    return dataclasses.field(default=default, metadata={"hi": most})


DECLARED: list[type] = []  # every contract, in the order declared


@typing.dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, bounded, text))
def contract(cls: type[C]) -> type[C]:
    """Declare an event or record: a dataclass with slots, frozen to the type checker.

    Frozen by the type checker (mypy runs with the tests), not at run time: a frozen dataclass
    sets each field through `object.__setattr__`, four times the cost of a plain one, and an
    instance is built for every event decoded and every window a stage closes. Hashed by its
    fields, as a frozen one is."""
    cls = dataclasses.dataclass(slots=True, unsafe_hash=True)(cls)
    DECLARED.append(cls)
    return cls


if typing.TYPE_CHECKING:
    EventTime = float  # to the type checker a time is the float it is
else:
    class EventTime(float):
        """Epoch seconds (UTC); ISO 8601 with an offset on the wire."""


@lru_cache(maxsize=1 << 16)  # window bounds repeat across thousands of records
def iso(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a `Z`, millisecond precision."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rounded(x: float, digits: int) -> float:
    """`x` to `digits` decimals, as records carry measured numbers.

    A fifth of the cost of `round()`, which goes through the decimal digits and is a noticeable
    share of a window's close. An exact binary half rounds up here and to even there; a
    computed measurement is never one."""
    scale = _SCALES[digits]
    return math.floor(x * scale + 0.5) / scale


_SCALES = tuple(10.0**d for d in range(10))


def parse_time(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 time string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("has no UTC offset; event times must be UTC, e.g. 2026-07-20T08:00:00Z")
    if not EARLIEST <= parsed < LATEST:
        raise ValueError(f"is outside {EARLIEST.year}-{LATEST.year - 1}")
    return parsed.timestamp()


R = TypeVar("R")


def per_contract(fn: Callable[[Any], R]) -> Callable[[Any], R]:
    """Memoised by contract class: worked out once per contract, used for every event."""
    return cache(fn)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    check: Any  # callable(value) -> value, raises ValueError
    required: bool
    default: Any


def _checker(tp: Any, lo: float | None, hi: float | None):
    """A function that validates and converts one wire value of type `tp`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        check = _checker(inner[0], lo, hi)
        return lambda v: None if v is None else check(v)
    if origin is Literal:
        allowed = typing.get_args(tp)

        def literal(v):
            if v not in allowed:
                raise ValueError(f"must be one of {', '.join(map(str, allowed))}")
            return v

        return literal
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        item = _checker(item_tp, None, None)

        def listing(v):
            if not isinstance(v, list):
                raise ValueError("expected a list")
            return [item(x) for x in v]  # as the record was built: a restored record equals the saved one

        return listing
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        key, value = _checker(key_tp, None, None), _checker(value_tp, None, None)

        def mapping(v):
            if not isinstance(v, dict):
                raise ValueError("expected an object")
            return {key(k): value(x) for k, x in v.items()}

        return mapping
    if origin is tuple:
        items = [_checker(a, None, None) for a in typing.get_args(tp)]

        def pair(v):
            if not isinstance(v, list) or len(v) != len(items):
                raise ValueError(f"expected a list of {len(items)} values")
            return tuple(c(x) for c, x in zip(items, v))

        return pair
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return lambda v: from_dict(tp, v)
    if tp is EventTime:
        return parse_time
    if tp is str:
        most = int(hi) if hi is not None else MOST_CHARACTERS

        def characters(v):
            if not isinstance(v, str) or not v:
                raise ValueError("expected a non-empty string")
            if len(v) > most:
                raise ValueError(f"{len(v):,} characters, more than the {most:,} allowed")
            return v

        return characters
    if tp is bool:

        def flag(v):
            if not isinstance(v, bool):
                raise ValueError("expected true or false")
            return v

        return flag
    if tp in (int, float):
        whole = tp is int

        def number(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError("expected a number")
            if whole and not isinstance(v, int):
                raise ValueError("expected a whole number")
            if not math.isfinite(v):
                raise ValueError("must be finite")
            if lo is not None and v < lo:
                raise ValueError(f"must be >= {lo}")
            if hi is not None and v > hi:
                raise ValueError(f"must be <= {hi}")
            return v if whole else float(v)

        return number
    raise TypeError(f"no wire rule for {tp!r}")


@per_contract
def _fields(cls: Any) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        make: Any = f.default_factory
        default = None if required else (f.default if f.default is not dataclasses.MISSING else make())
        check = _checker(hints[f.name], f.metadata.get("lo"), f.metadata.get("hi"))
        out.append(_Field(f.name, check, required, default))
    return tuple(out)


def from_dict(cls: type[C], payload: Any) -> C:
    """Validate a decoded JSON object against contract `cls`."""
    if not isinstance(payload, dict):
        raise Rejected(f"{cls.__name__}: expected a JSON object")
    values = {}
    for f in _fields(cls):
        if f.name in payload:
            try:
                values[f.name] = f.check(payload[f.name])
            except Rejected as exc:
                raise Rejected(f"{cls.__name__}.{f.name}: {exc.reason}") from None
            except (ValueError, TypeError) as exc:
                raise Rejected(f"{cls.__name__}.{f.name}: {exc}") from None
        elif f.required:
            raise Rejected(f"{cls.__name__}: missing field {f.name}")
        else:
            values[f.name] = f.default
    return cls(**values)


def decode(cls: type[C], raw: bytes | None) -> C:
    """Parse wire bytes into contract `cls`, or raise `Rejected`."""
    return decoder(cls)(raw)


@per_contract
def decoder(cls: type[C]) -> Callable[[bytes | None], C]:
    """`decode` for one contract, for a batch of its events."""
    fast = _fast_decoder(cls)
    wrong = (msgspec.ValidationError, msgspec.DecodeError, ValueError)

    def decode_one(raw: bytes | None) -> C:
        if fast is not None and raw:
            try:
                return fast(raw)
            except wrong:
                pass  # the checks below say why
        if not raw:
            raise Rejected(f"{cls.__name__}: empty message", "malformed")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Rejected(f"{cls.__name__}: not JSON ({exc})", "malformed") from None
        return from_dict(cls, payload)

    return decode_one


def _wire_type(tp: Any, lo: float | None, hi: float | None) -> Any:
    """The msgspec type that accepts exactly what `_checker(tp, lo, hi)` accepts, or None."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        wire = _wire_type(inner[0], lo, hi) if len(inner) == 1 else None
        return None if wire is None else wire | None
    if origin is Literal:
        return tp if all(isinstance(a, str) for a in typing.get_args(tp)) else None
    if tp is EventTime:
        return str  # parsed as the checks below parse it
    if tp is str:
        return typing.Annotated[str, msgspec.Meta(min_length=1, max_length=int(hi) if hi is not None else MOST_CHARACTERS)]
    if tp is bool:
        return bool
    if tp in (int, float):
        return typing.Annotated[tp, msgspec.Meta(ge=lo, le=hi)] if lo is not None or hi is not None else tp
    return None  # lists, records, mappings: the checks below


@per_contract
def _fast_decoder(cls: Any) -> Any:
    """A function from wire bytes to `cls` through a msgspec Struct mirroring it, or None."""
    if hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        return None  # the instance is built without `__init__`, slot by slot
    hints = typing.get_type_hints(cls)
    fields: list[tuple[Any, ...]] = []
    times = []
    for f in dataclasses.fields(cls):
        wire = _wire_type(hints[f.name], f.metadata.get("lo"), f.metadata.get("hi"))
        if wire is None:
            return None
        if EventTime in (hints[f.name], *typing.get_args(hints[f.name])):
            times.append(f.name)
        if f.default is not dataclasses.MISSING:
            fields.append((f.name, wire, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            return None
        else:
            fields.append((f.name, wire))
    struct = msgspec.defstruct(f"{cls.__name__}Wire", fields, gc=False)
    decoder = msgspec.json.Decoder(struct)
    # Written out per contract (see `_to_dict_of`), setting the slots directly: the decoder
    # builds one instance per event, and `__init__` would pass every field twice.
    lines = ["def fast(raw):", "    w = _decode(raw)", "    e = _new(_cls)"]
    frozen = cls.__dataclass_params__.frozen  # a record kept by a stage may be frozen at run time too
    for name, *_ in fields:
        # A time is text on the wire; anything else is the field's default, kept as it is.
        value = f"_time(w.{name}) if w.{name}.__class__ is str else w.{name}" if name in times else f"w.{name}"
        lines.append(f"    _set_{name}(e, {value})" if frozen else f"    e.{name} = {value}")
    namespace = {"_decode": decoder.decode, "_new": object.__new__, "_cls": cls, "_time": _parse_wire_time,
                 **{f"_set_{name}": getattr(cls, name).__set__ for name, *_ in fields}}
    exec("\n".join([*lines, "    return e", ""]), namespace)  # noqa: S102  field names are identifiers
    return namespace["fast"]


@lru_cache(maxsize=1 << 12)  # the events of one moment share their time
def _parse_wire_time(value: str) -> float:
    return parse_time(value)


def _to_wire(tp: Any):
    """How a value of type `tp` goes onto the wire (times as ISO 8601, records as objects)."""
    if tp is EventTime:
        return iso
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = _to_wire(next(a for a in typing.get_args(tp) if a is not type(None)))
        return None if inner is None else (lambda v: None if v is None else inner(v))
    if origin in (list, tuple):
        items = [_to_wire(a) for a in typing.get_args(tp) if a is not Ellipsis]
        if all(i is None for i in items):
            return list
        item = items[0] if origin is list else None
        if item is not None:
            return lambda v: [item(x) for x in v]
        return lambda v: [c(x) if c else x for c, x in zip(items, v)]
    if dataclasses.is_dataclass(tp):
        return to_dict
    return None  # as it is


@per_contract
def _to_dict_of(cls: Any) -> Any:
    """A function from an instance of `cls` to its JSON object.

    Written out per contract, as dataclasses writes `__init__`: records are encoded for every
    window, alert and Redis write, and a loop over the fields costs twice as much."""
    hints = typing.get_type_hints(cls)
    converts = {f.name: _to_wire(hints[f.name]) for f in dataclasses.fields(cls)}
    items = ", ".join(f"{name!r}: _{name}(e.{name})" if convert else f"{name!r}: e.{name}"
                      for name, convert in converts.items())
    namespace = {f"_{name}": convert for name, convert in converts.items() if convert}
    exec(f"def to_dict(e):\n    return {{{items}}}\n", namespace)  # noqa: S102  field names are identifiers
    return namespace["to_dict"]


def to_dict(event: Any) -> dict:
    """A contract instance as its JSON object (times as ISO 8601)."""
    return _to_dict_of(type(event))(event)


def as_plain(value: Any) -> Any:
    """A subclass of a JSON type (a token is a `str`) as that type, for msgspec's encoders."""
    for plain in (str, float, int):
        if isinstance(value, plain):
            return plain(value)
    raise NotImplementedError(f"{type(value).__name__} is not JSON")


# msgspec's encoder, not orjson's: orjson starts each output in a buffer of its own and shrinks
# it, which costs five times as much as the encoding when thousands of records are kept until a
# batch commits.
_json = msgspec.json.Encoder(enc_hook=as_plain)


@per_contract
def _encoder_of(cls: Any) -> Any:
    """A function from an instance of `cls` to its wire bytes: its fields as `to_dict` converts
    them, in a msgspec Struct of the same fields, which encodes in half the time of a dict."""
    hints = typing.get_type_hints(cls)
    converts = {f.name: _to_wire(hints[f.name]) for f in dataclasses.fields(cls)}
    wire = msgspec.defstruct(f"{cls.__name__}Out", [(name, Any) for name in converts], gc=False)
    values = ", ".join(f"_{name}(e.{name})" if convert else f"e.{name}" for name, convert in converts.items())
    namespace = {"_encode": _json.encode, "_wire": wire, **{f"_{name}": c for name, c in converts.items() if c}}
    exec(f"def encode(e):\n    return _encode(_wire({values}))\n", namespace)  # noqa: S102  field names are identifiers
    return namespace["encode"]


def encode(event: Any) -> bytes:
    """A contract instance as wire bytes."""
    return _encoder_of(type(event))(event)
