"""The city's live state in Redis, written atomically with the Kafka offset that produced it.

Each partition of each stage owns the keys under one hash tag, `<prefix>:{<stage>.<partition>}`,
so a batch's writes land in one Redis Cluster slot and one Lua script applies them together with
the partition's offset. The script refuses a batch built on an offset other than the stored one:
a redelivered batch after a crash or a rebalance never counts twice, and a worker that lost its
partition finds out instead of overwriting the new owner's state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# KEYS[1]: the partition's applied offset; KEYS[2]: its commit counter, which every commit bumps
# and which fences out a worker whose view is stale (even a timer's commit that moves no offset).
# ARGV: the commit count the batch was built on, its offset, a JSON list of commands.
# Every key the commands touch shares the hash tag of KEYS[1].
APPLY_BATCH = """
local commits = redis.call('GET', KEYS[2]) or '0'
if commits ~= ARGV[1] then return {0, commits} end
local offset = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[2]) < offset then return {0, commits} end
for _, command in ipairs(cjson.decode(ARGV[3])) do
  redis.call(unpack(command))
end
redis.call('SET', KEYS[1], ARGV[2])
return {1, redis.call('INCR', KEYS[2])}
"""

# Lua's unpack() takes a few thousand values at most; long writes are split.
MAX_ARGS_PER_COMMAND = 2000


def partition_key(prefix: str, stage: str, partition: int) -> str:
    """The key base (with its hash tag) of one stage's partition."""
    return f"{prefix}:{{{stage}.{partition}}}"


@dataclass
class Batch:
    """Redis commands that one partition's events produced, the offset they bring the partition
    to, and the commit count of the state they were built on."""

    base: str
    commits: int
    offset: int
    commands: list[list[str]] = field(default_factory=list)

    def hset(self, name: str, mapping: dict[str, str | bytes]) -> None:
        items = [x for kv in mapping.items() for x in kv]
        for i in range(0, len(items), MAX_ARGS_PER_COMMAND):
            self.commands.append(["HSET", f"{self.base}:{name}", *items[i : i + MAX_ARGS_PER_COMMAND]])

    def hdel(self, name: str, fields: Iterable[str]) -> None:
        fields = list(fields)
        for i in range(0, len(fields), MAX_ARGS_PER_COMMAND):
            self.commands.append(["HDEL", f"{self.base}:{name}", *fields[i : i + MAX_ARGS_PER_COMMAND]])

    def set(self, name: str, value: str | bytes) -> None:
        self.commands.append(["SET", f"{self.base}:{name}", value])

    def zadd(self, name: str, scores: dict[str, float]) -> None:
        items = [x for member, score in scores.items() for x in (repr(score), member)]
        for i in range(0, len(items), MAX_ARGS_PER_COMMAND):
            self.commands.append(["ZADD", f"{self.base}:{name}", *items[i : i + MAX_ARGS_PER_COMMAND]])

    def zrem(self, name: str, members: Iterable[str]) -> None:
        members = list(members)
        if members:
            self.commands.append(["ZREM", f"{self.base}:{name}", *members])

    def delete(self, name: str) -> None:
        self.commands.append(["DEL", f"{self.base}:{name}"])


class StateStore:
    """Loads and commits partition state in Redis; one round trip per call."""

    def __init__(self, client: aioredis.Redis):
        self.redis = client
        self._apply = client.register_script(APPLY_BATCH)

    async def load(self, base: str, hashes: Sequence[str]) -> Snapshot:
        """A partition's offset (-1 when none), commit count and named hashes, read atomically."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(f"{base}:offset")
            pipe.get(f"{base}:commits")
            for name in hashes:
                pipe.hgetall(f"{base}:{name}")
            offset, commits, *contents = await pipe.execute()
        return Snapshot(
            int(offset) if offset is not None else -1,
            int(commits) if commits is not None else 0,
            {name: {_text(k): v for k, v in content.items()} for name, content in zip(hashes, contents)},
        )

    async def commit(self, batches: Sequence[Batch]) -> list[int | None]:
        """Apply each batch atomically with its offset; the new commit count, or None where the
        partition's state had moved on under another worker."""
        if not batches:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in batches:
                await self._apply(
                    keys=[f"{b.base}:offset", f"{b.base}:commits"],
                    args=[str(b.commits), str(b.offset), orjson.dumps(b.commands)],
                    client=pipe,
                )
            results = await pipe.execute()
        applied: list[int | None] = []
        for b, (ok, commits) in zip(batches, results):
            if not ok:
                log.warning("state of %s moved on (commit %s) elsewhere; reloading", b.base, _text(commits))
            applied.append(int(commits) if ok else None)
        return applied


@dataclass(frozen=True)
class Snapshot:
    offset: int
    commits: int
    hashes: dict[str, dict[str, bytes]]


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
