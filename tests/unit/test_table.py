"""A stage's keyed state (streams/table.py): what is written is what is restored, and a batch
writes only what changed."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.cap import Incident
from streams.stage import Stage
from streams.state import Batch
from streams.table import GroupedTable, Table


@dataclass(frozen=True, slots=True)
class Watch:
    level: str | None = None
    incident: Incident | None = None
    history: list[tuple[float, float]] = field(default_factory=list)


class Kept:
    watch = Table(Watch)
    slots = Table(dict, key=(float, str), hash="open")
    stays = GroupedTable(str)
    view = Table(dict, restored=False)


def saved(batch: Batch) -> dict[str, dict[str, bytes]]:
    """The hashes as Redis holds them after the batch's commands."""
    hashes: dict[str, dict[str, bytes]] = {}
    for command, key, *args in batch.commands:
        name = key.rsplit(":", 1)[1]
        if command == "HSET":
            hashes.setdefault(name, {}).update({args[i]: args[i + 1].encode() for i in range(0, len(args), 2)})
        else:
            for f in args:
                hashes.get(name, {}).pop(f, None)
    return hashes


def save_all(kept: Kept) -> Batch:
    batch = Batch("p:{s.0}", 0, {})
    for rows in (kept.watch, kept.slots, kept.stays, kept.view):
        rows.save(batch)
    return batch


def test_what_a_table_writes_it_restores_equal():
    kept = Kept()
    kept.watch["P1"] = Watch("warning", Incident("flood.P1", 2, "s,id,t"), [(1.0, 20.0), (2.0, 31.5)])
    kept.slots[1_784_530_800.0, "S|1"] = {"n": 3}
    kept.stays["L1", "tok|en"] = "E1"
    kept.stays["L1", "t2"] = "E2"
    kept.stays["L2", "t3"] = "E3"
    hashes = saved(save_all(kept))
    restored = Kept()
    for rows, name in ((restored.watch, "watch"), (restored.slots, "open"), (restored.stays, "stays")):
        rows.restore(hashes[name])
    assert dict(restored.watch) == dict(kept.watch)
    assert dict(restored.slots) == {(1_784_530_800.0, "S|1"): {"n": 3}}
    assert restored.stays.group("L1") == {"tok|en": "E1", "t2": "E2"} and restored.stays.group("L2") == {"t3": "E3"}
    assert hashes["stays"]["L1|tok|en"] == b"E1"  # an id is kept as it is


def test_a_save_writes_what_changed_and_deletes_what_went():
    kept = Kept()
    kept.watch["P1"], kept.watch["P2"] = Watch("watch"), Watch("warning")
    save_all(kept)
    kept.watch["P2"] = Watch("closure")
    del kept.watch["P1"]
    assert kept.watch.dirty() == {"P1", "P2"}
    batch = save_all(kept)
    assert [(c[0], c[2]) for c in batch.commands] == [("HDEL", "P1"), ("HSET", "P2")]
    assert save_all(kept).commands == []  # nothing changed since


def test_a_group_goes_as_a_whole_and_its_members_are_deleted():
    kept = Kept()
    kept.stays["L1", "a"], kept.stays["L1", "b"], kept.stays["L2", "c"] = "1", "2", "3"
    save_all(kept)
    assert kept.stays.pop_group("L1") == {"a": "1", "b": "2"}
    assert kept.stays.dirty_groups() == {"L1"} and kept.stays.group("L1") == {}
    assert sorted(save_all(kept).commands[0][2:]) == ["L1|a", "L1|b"]


def test_a_view_is_written_and_never_restored():
    class Viewed(Stage):
        name, source, contract = "viewed", "traffic_readings", dict
        watch = Table(Watch)
        view = Table(dict, restored=False)
        hashes = ("meta",)

        def on_event(self, value, source, effects) -> None: ...

    assert Viewed.restored_hashes() == ("meta", "watch")
