"""A stage's keyed state: typed values by key, kept in one Redis hash of the stage's partition.

A stage declares its tables as class attributes, `watch = Table(PointWatch)`, and uses each as
a dict. The stage base class restores them when the partition is loaded and, after each batch,
writes what changed (set, deleted, or marked with `touch` after a change in place) with the
batch's atomic commit. Values are records (dataclasses, decoded as their contract says) or
plain JSON types; a composite key is a tuple, written `a|b` (its last part may contain `|`).
A table keyed by two parts (a lot and a plate token, a window and a junction) is grouped by the
first: `group(lot)` is what one lot holds, without a scan of every lot's. A table declared
`restored=False` is a view: written for dashboards and `citybrain watch`, never read back. One
declared `held=False` is read back when the partition loads, for the stage to rebuild what it
holds in a form of its own (a windowed stage's open windows), and is otherwise only written.

Beside tables, a stage keeps single values (`swept_at = Value(float, -math.inf)`: a clock, the
time of the last sweep), all in the partition's `meta` hash and written when they change, and
rankings (`Ranking()`: a Redis sorted set, the most congested roads), views written with the batch.
Tools read a stage's state through the same declarations (`fetch`), never by key names of their own.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from functools import cache
from typing import Any, Generic, TypeVar, overload

import msgspec

from schemas.contract import as_plain, decode, encode
from streams.state import Batch, partition_key

K = TypeVar("K")
V = TypeVar("V")

KEY_SEPARATOR = "|"


def _key_codec(parts: tuple[type, ...]) -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """How a key of these parts becomes a hash field and back (floats as their repr, exactly)."""
    if parts == (str,):
        return (lambda k: k), (lambda f: f)
    if len(parts) == 1:  # a number: a partition, a time
        return (repr if parts[0] is float else str), parts[0]
    # Written out for the key at hand, as the contracts' codecs are: a batch writes thousands.
    parts_written = KEY_SEPARATOR.join(f"{{k[{i}]{'!r' if t is float else ''}}}" for i, t in enumerate(parts))
    to_field = eval(f'lambda k: f"{parts_written}"')  # noqa: S307  a format of indices and conversions only

    def from_field(name: str) -> tuple:
        return tuple(t(v) for t, v in zip(parts, name.split(KEY_SEPARATOR, len(parts) - 1)))

    return to_field, from_field


def _value_codec(value: Any) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    """How a value of this type is written and read: records as their contract, the rest as JSON."""
    if isinstance(value, type) and dataclasses.is_dataclass(value):
        return encode, lambda raw: decode(value, raw)
    if value is str:  # as it is: an id, a time
        return str.encode, bytes.decode
    if value is float:  # exactly, infinities too (JSON has none)
        return (lambda v: repr(v).encode()), float
    reader = msgspec.json.Decoder() if value is object else msgspec.json.Decoder(value)  # object: any JSON
    # Keys sorted: a mapping filled in arrival order is written the same whatever the order.
    return SORTED_JSON.encode, reader.decode


SORTED_JSON = msgspec.json.Encoder(order="sorted", enc_hook=as_plain)


class Table(Generic[V]):
    """The declaration of one table of a stage: its value type, key parts and Redis hash."""

    def __init__(self, value: type[V], *, key: tuple[type, ...] = (str,), hash: str | None = None,
                 restored: bool = True, held: bool = True):
        self.hash = hash or ""  # the attribute's name unless it says otherwise
        self.restored = restored
        self.held = restored and held  # kept in memory after each batch's save
        self.to_field, self.from_field = _key_codec(key)
        self.write, self.read = _value_codec(value)
        self.attribute = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = name
        self.hash = self.hash or name

    @overload
    def __get__(self, stage: None, owner: type) -> Table[V]: ...

    @overload
    def __get__(self, stage: object, owner: type) -> Rows[Any, V]: ...

    def __get__(self, stage: object | None, owner: type) -> Table[V] | Rows[Any, V]:
        if stage is None:
            return self
        rows: Rows[Any, V] = Rows(self)
        vars(stage)[self.attribute] = rows  # from now on found before the declaration
        return rows

    async def fetch_all(self, client: Any, prefix: str, stage: str, partitions: Iterable[int]) -> dict[Any, V]:
        """Every row of the given partitions of `stage`, as they last wrote them (for a worker's
        web pages and tools, which answer for partitions other workers hold)."""
        async with client.pipeline(transaction=False) as pipe:  # one round trip
            for partition in partitions:
                pipe.hgetall(f"{partition_key(prefix, stage, partition)}:{self.hash}")
            stored = await pipe.execute()
        return {self.from_field(k.decode()): self.read(v) for hashed in stored for k, v in hashed.items()}


G = TypeVar("G")


class GroupedTable(Table[V]):
    """A table keyed by (group, key): a lot's stays, a zone's residents, a window's junctions."""

    def __init__(self, value: type[V], *, key: tuple[type, type] = (str, str), hash: str | None = None,
                 restored: bool = True):
        super().__init__(value, key=key, hash=hash, restored=restored)

    @overload
    def __get__(self, stage: None, owner: type) -> GroupedTable[V]: ...

    @overload
    def __get__(self, stage: object, owner: type) -> GroupedRows[Any, Any, V]: ...

    def __get__(self, stage: object | None, owner: type) -> GroupedTable[V] | GroupedRows[Any, Any, V]:
        if stage is None:
            return self
        rows: GroupedRows[Any, Any, V] = GroupedRows(self)
        vars(stage)[self.attribute] = rows
        return rows


class Rows(MutableMapping[K, V]):
    """One partition's table: a dict that remembers what changed since it was last saved."""

    __slots__ = ("table", "values_by_key", "changed", "deleted")

    def __init__(self, table: Table[V]):
        self.table = table
        self.values_by_key: dict[K, V] = {}
        self.changed: set[K] = set()
        self.deleted: set[K] = set()

    def restore(self, content: dict[str, bytes]) -> None:
        from_field, read = self.table.from_field, self.table.read
        self.values_by_key = {from_field(name): read(raw) for name, raw in content.items()}
        self.changed.clear()
        self.deleted.clear()

    def save(self, batch: Batch) -> None:
        """Stage the writes of what changed since the last save."""
        to_field, write, name = self.table.to_field, self.table.write, self.table.hash
        if self.deleted:
            batch.hdel(name, [to_field(k) for k in self.deleted])
            self.deleted.clear()
        if self.changed:
            values = self.values_by_key
            batch.hset(name, {to_field(k): write(values[k]).decode() for k in self.changed})
            self.changed.clear()
        if not self.table.held:
            self.values_by_key.clear()  # a view is written, not kept

    def __getitem__(self, key: K) -> V:
        return self.values_by_key[key]

    def get(self, key: K, default: Any = None) -> Any:
        return self.values_by_key.get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        self.values_by_key[key] = value
        self.changed.add(key)
        self.deleted.discard(key)

    def update(self, values: Mapping[K, V]) -> None:  # type: ignore[override]
        """Set many keys at once."""
        self.values_by_key.update(values)
        self.changed.update(values)
        self.deleted.difference_update(values)

    def discard_all(self, keys: Iterable[K]) -> None:
        """`discard` each of `keys`."""
        keys = list(keys)
        if self.values_by_key:
            for key in keys:
                self.values_by_key.pop(key, None)
        self.changed.difference_update(keys)
        self.deleted.update(keys)

    def dirty(self) -> set[K]:
        """The keys set or deleted since the last save."""
        return self.changed | self.deleted

    def touch(self, key: K) -> None:
        """The value at `key` was changed in place: write it with the batch."""
        assert key in self.values_by_key, key  # a new value is set, not touched
        self.changed.add(key)

    def __delitem__(self, key: K) -> None:
        del self.values_by_key[key]
        self.changed.discard(key)
        self.deleted.add(key)

    def discard(self, key: K) -> None:
        """Delete `key` whether or not it is held here (a view keeps nothing once written)."""
        self.values_by_key.pop(key, None)
        self.changed.discard(key)
        self.deleted.add(key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self.values_by_key:
            value = self.values_by_key[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.values_by_key

    def __iter__(self) -> Iterator[K]:
        return iter(self.values_by_key)

    def __len__(self) -> int:
        return len(self.values_by_key)

    def keys(self):
        return self.values_by_key.keys()

    def values(self):
        return self.values_by_key.values()

    def items(self):
        return self.values_by_key.items()


class GroupedRows(Rows[tuple[G, K], V]):
    """One partition's grouped table: its values by group, then by key within the group."""

    __slots__ = ("groups",)

    def __init__(self, table: Table[V]):
        super().__init__(table)
        self.groups: dict[G, dict[K, V]] = {}

    def restore(self, content: dict[str, bytes]) -> None:
        super().restore(content)
        self.groups = {}
        for (group, key), value in self.values_by_key.items():
            self.groups.setdefault(group, {})[key] = value

    def group(self, group: G) -> Mapping[K, V]:
        """What one group holds, by key; read it, change it through the table."""
        return self.groups.get(group, {})

    def update(self, values: Mapping[tuple[G, K], V]) -> None:  # type: ignore[override]
        for key, value in values.items():  # key by key, each into its group
            self[key] = value

    def discard_all(self, keys: Iterable[tuple[G, K]]) -> None:
        for key in keys:
            self.discard(key)

    def save(self, batch: Batch) -> None:
        super().save(batch)
        if not self.table.held:
            self.groups.clear()

    def discard(self, key: tuple[G, K]) -> None:
        super().discard(key)
        members = self.groups.get(key[0])
        if members is not None:
            members.pop(key[1], None)
            if not members:
                del self.groups[key[0]]

    def __setitem__(self, key: tuple[G, K], value: V) -> None:
        super().__setitem__(key, value)
        self.groups.setdefault(key[0], {})[key[1]] = value

    def __delitem__(self, key: tuple[G, K]) -> None:
        super().__delitem__(key)
        members = self.groups[key[0]]
        del members[key[1]]
        if not members:
            del self.groups[key[0]]

    def dirty_groups(self) -> set[G]:
        """The groups with a key set or deleted since the last save."""
        return {key[0] for key in self.dirty()}

    def drop_before(self, bound: G) -> list[G]:
        """Remove the groups before `bound` (windows past a stage's horizon); which they were."""
        gone = [g for g in self.groups if g < bound]  # type: ignore[operator]
        for group in gone:
            self.pop_group(group)
        return gone

    def pop_group(self, group: G) -> dict[K, V]:
        """Remove a whole group; what it held."""
        members = self.groups.pop(group, {})
        for key in members:
            super().__delitem__((group, key))
        return members


class Value(Generic[V]):
    """One typed value of a stage's partition, kept in its `meta` hash under the attribute's name.
    It reads as the default until set; the stage writes it at the end of a batch where it changed
    (in place too: a dict is compared as written)."""

    HASH = "meta"

    def __init__(self, value: type[V], default: V, *, restored: bool = True):
        write, read = _value_codec(value)
        self.write: Callable[[Any], bytes] = lambda v: b"null" if v is None else write(v)
        self.read: Callable[[bytes], Any] = lambda raw: None if raw == b"null" else read(raw)
        self.default = default
        self.restored = restored
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, stage: None, owner: type) -> Value[V]: ...

    @overload
    def __get__(self, stage: object, owner: type) -> V: ...

    def __get__(self, stage: object | None, owner: type) -> Value[V] | V:
        if stage is None:
            return self
        value = vars(stage)[self.name] = copy.deepcopy(self.default)  # from now on found before the declaration
        return value

    async def fetch(self, client: Any, prefix: str, stage: str, partition: int) -> V:
        """The value as a partition of `stage` last wrote it (for tools: a worker holds its own)."""
        raw = await client.hget(f"{partition_key(prefix, stage, partition)}:{self.HASH}", self.name)
        return copy.deepcopy(self.default) if raw is None else self.read(raw)


class Ranking:
    """Members by score, kept as a Redis sorted set of the partition: a view for dashboards and
    `citybrain watch`, written with the batch and never read back."""

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, stage: None, owner: type) -> Ranking: ...

    @overload
    def __get__(self, stage: object, owner: type) -> RankingRows: ...

    def __get__(self, stage: object | None, owner: type) -> Ranking | RankingRows:
        if stage is None:
            return self
        rows = vars(stage)[self.name] = RankingRows(self.name)
        return rows

    async def fetch(self, client: Any, prefix: str, stage: str, partition: int, top: int) -> list[tuple[str, float]]:
        """The `top` members of a partition's ranking, highest score first."""
        key = f"{partition_key(prefix, stage, partition)}:{self.name}"
        return [(m.decode(), s) for m, s in await client.zrevrange(key, 0, top - 1, withscores=True)]


class RankingRows:
    """One partition's ranking: what changed since the batch began."""

    __slots__ = ("name", "scores", "removed", "cleared")

    def __init__(self, name: str):
        self.name = name
        self.scores: dict[str, float] = {}
        self.removed: set[str] = set()
        self.cleared = False

    def update(self, scores: Mapping[str, float]) -> None:
        self.scores.update(scores)
        self.removed.difference_update(scores)

    def discard(self, member: str) -> None:
        self.scores.pop(member, None)
        self.removed.add(member)

    def replace(self, scores: Mapping[str, float]) -> None:
        """The whole ranking is now `scores`."""
        self.scores, self.removed, self.cleared = dict(scores), set(), True

    def save(self, batch: Batch) -> None:
        if self.cleared:
            batch.delete(self.name)
        if self.removed:
            batch.zrem(self.name, sorted(self.removed))
        if self.scores:
            batch.zadd(self.name, self.scores)
        self.scores, self.removed, self.cleared = {}, set(), False


D = TypeVar("D")


@cache
def declared(stage_class: type, kind: type[D]) -> dict[str, D]:
    """What a stage class declares of a kind (Table, Value, Ranking), its own and inherited, by name."""
    found: dict[str, D] = {}
    for klass in reversed(stage_class.__mro__):
        found.update({name: d for name, d in vars(klass).items() if isinstance(d, kind)})
    return found
