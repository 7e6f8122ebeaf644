"""Replays recorded events (JSON Lines, or CSV with a column mapping) onto a topic.

Events go out at their recorded pace scaled by a factor (event times taken from `time_field`),
or as fast as possible. Records are published as they are: the workers validate them, so a bad
line in a recording ends up on the dead-letter topic like any bad live event.
"""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from schemas.contract import parse_time
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


def read_events(path: Path, mapping: dict[str, str]) -> Iterator[dict[str, Any] | bytes]:
    """Records from a JSON Lines or CSV file; a JSON line that does not parse is passed on raw."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                yield {mapping.get(col, col): _scalar(v) for col, v in row.items() if v not in ("", None)}
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
    settings: Settings, path: str, role: str, speed: float | None, mapping: dict[str, str], time_field: str
) -> int:
    """Publish every event of the file onto the topic of `role`; returns how many were sent."""
    if role not in SPECS:
        raise SystemExit(f"unknown topic role {role!r}; one of: {', '.join(SPECS)}")
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
