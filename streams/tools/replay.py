"""Replays recorded events (JSON Lines, or CSV with a column mapping) onto a topic.

Events go out at their recorded pace scaled by a factor (event times taken from `time_field`),
or as fast as possible. A CSV column maps to a contract field, scaled on the way where the
recording counts in other units (`mph=speed_kmh*1.609344`); a recording whose times carry no
offset is read in the time zone it was made in (`timezone`) and published in UTC. Records are
otherwise published as they are: the workers validate them, so a bad line in a recording ends up
on the dead-letter topic like any bad live event.
"""

from __future__ import annotations

import asyncio
import csv
import math
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from schemas.contract import iso, parse_time
from streams.settings import Settings
from streams.tools.feed import Publisher
from streams.topics import SPECS


def _scalar(text: str) -> Any:
    """A CSV cell as the JSON value it most plausibly is."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def column_mapping(specs: list[str] | tuple[str, ...]) -> dict[str, tuple[str, float]]:
    """`COLUMN=field` or `COLUMN=field*factor` (units converted on the way) -> column: (field, factor)."""
    mapping = {}
    for spec in specs:
        column, sep, target = spec.partition("=")
        field, _, factor = target.partition("*")
        if not sep or not column or not field:
            raise SystemExit(f"--map {spec!r}: expected COLUMN=field or COLUMN=field*factor")
        try:
            scale = float(factor) if factor else 1.0
        except ValueError:
            scale = math.nan
        if not math.isfinite(scale):
            raise SystemExit(f"--map {spec!r}: the factor {factor!r} is not a number")
        mapping[column] = (field, scale)
    return mapping


def _cell(text: str, factor: float) -> Any:
    value = _scalar(text)
    return value * factor if factor != 1.0 and isinstance(value, (int, float)) and not isinstance(value, bool) else value


def in_utc(value: Any, zone: ZoneInfo) -> Any:
    """A recorded time without an offset, read in `zone`, as ISO 8601 UTC; one with an offset,
    or not a time at all, as it is (the worker judges it)."""
    if not isinstance(value, str):
        return value
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return value
    return iso(t.replace(tzinfo=zone).timestamp()) if t.tzinfo is None else value


def read_events(path: Path, mapping: dict[str, tuple[str, float]]) -> Iterator[dict[str, Any] | bytes]:
    """Records from a JSON Lines or CSV file; a JSON line that does not parse is passed on raw."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                yield {mapping.get(col, (col, 1.0))[0]: _cell(v, mapping.get(col, (col, 1.0))[1])
                       for col, v in row.items() if v not in ("", None)}
        return
    with path.open("rb") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield line


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        n = sum(1 for line in f if line.strip())
    return n - 1 if path.suffix.lower() == ".csv" else n


class Progress:
    """A progress bar on stderr, redrawn at most twice a second."""

    def __init__(self, total: int):
        self.total, self.started, self.drawn = max(total, 1), time.monotonic(), 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.drawn < 0.5:
            return
        self.drawn = now
        share = done / self.total
        rate = done / max(now - self.started, 1e-9)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r[{bar:<30}] {share:6.1%} {done:,}/{self.total:,} {rate:,.0f}/s")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def replay_file(
    settings: Settings, path: str, role: str, speed: float | None, mapping: dict[str, tuple[str, float]], time_field: str,
    timezone: str | None = None,
) -> int:
    """Publish every event of the file onto the topic of `role`; returns how many were sent."""
    if role not in SPECS:
        raise SystemExit(f"unknown topic role {role!r}; one of: {', '.join(SPECS)}")
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (KeyError, ValueError, OSError):  # a name that is a directory of the zone database, or too long
        raise SystemExit(f"--timezone {timezone!r}: not a time zone name such as Asia/Shanghai") from None
    source = Path(path)
    key_field = SPECS[role].key
    progress = Progress(count_lines(source))
    first_event: float | None = None
    first_wall = 0.0
    async with Publisher(settings) as pub:
        for record in read_events(source, mapping):
            if isinstance(record, bytes):
                await pub.send_raw(role, None, record)
            else:
                if zone is not None and time_field in record:
                    record[time_field] = in_utc(record[time_field], zone)
                if speed and time_field in record:
                    try:
                        t = parse_time(record[time_field])
                    except ValueError:
                        t = None  # the worker will dead-letter it; pace goes on from the others
                    if t is not None:
                        if first_event is None:
                            first_event, first_wall = t, time.monotonic()
                        delay = first_wall + (t - first_event) / speed - time.monotonic()
                        if delay > 0:
                            await pub.flush()
                            await asyncio.sleep(delay)
                key = record.get(key_field)
                await pub.send_raw(role, str(key) if key is not None else None, orjson.dumps(record))
            progress.update(pub.sent)
    progress.update(pub.sent, final=True)
    return pub.sent
