"""The city's live state in Redis, written atomically with the Kafka offset that produced it.

Each partition of each stage owns the keys under one hash tag, `<prefix>:{<stage>.<partition>}`,
so a batch's writes land in one Redis Cluster slot and one Lua script applies them together with
the partition's offset. The script refuses a batch built on an offset other than the stored one:
a redelivered batch after a crash or a rebalance never counts twice, and a worker that lost its
partition finds out instead of overwriting the new owner's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

log = logging.getLogger(__name__)

# KEYS[1]: the partition's commit counter, which every commit bumps and which fences out a worker
# whose view is stale (even a timer's commit that moves no offset). KEYS[2..]: the applied offset
# of each source topic of the stage. ARGV: the commit count the batch was built on, the list of
# commands in MessagePack, then the new offsets in the order of KEYS[2..]. Every key shares
# KEYS[1]'s hash tag. MessagePack, not JSON: Redis's Lua reads it in half the time (a batch's
# values are JSON text, which JSON escapes), and it is Redis's time, on the city's busiest server.
APPLY_BATCH = """
local commits = redis.call('GET', KEYS[1]) or '0'
if commits ~= ARGV[1] then return {0, commits} end
for i = 2, #KEYS do
  if tonumber(ARGV[i + 1]) < tonumber(redis.call('GET', KEYS[i]) or '-1') then return {0, commits} end
end
for _, command in ipairs(cmsgpack.unpack(ARGV[2])) do
  redis.call(unpack(command))
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1])
end
return {1, redis.call('INCR', KEYS[1])}
"""

# Lua's unpack() takes a few thousand values at most; long writes are split.
MAX_ARGS_PER_COMMAND = 2000


def partition_key(prefix: str, stage: str, partition: int) -> str:
    """The key base (with its hash tag) of one stage's partition."""
    return f"{prefix}:{{{stage}.{partition}}}"


@dataclass
class Batch:
    """Redis commands that one partition's events produced, the offsets they bring its source
    topics to (by offset key name), and the commit count of the state they were built on."""

    base: str
    commits: int
    offsets: dict[str, int]
    commands: list[list[str | bytes]] = field(default_factory=list)

    def hset(self, name: str, mapping: Mapping[str, str | bytes]) -> None:
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

    def unlink(self, name: str) -> None:
        """Delete a key that may be large: Redis frees it in the background."""
        self.commands.append(["UNLINK", f"{self.base}:{name}"])


class StateStore:
    """Loads and commits partition state in Redis; one round trip per call."""

    def __init__(self, client: aioredis.Redis | RedisCluster):
        self.redis = client
        self._apply = client.register_script(APPLY_BATCH)

    async def load(self, base: str, offsets: Sequence[str], hashes: Sequence[str]) -> Snapshot:
        """A partition's offsets by key name (-1 when none), commit count and named hashes, read
        atomically."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(f"{base}:commits")
            for name in offsets:
                pipe.get(f"{base}:{name}")
            for name in hashes:
                pipe.hgetall(f"{base}:{name}")
            commits, *rest = await pipe.execute()
        stored, contents = rest[: len(offsets)], rest[len(offsets) :]
        return Snapshot(
            {name: int(v) if v is not None else -1 for name, v in zip(offsets, stored)},
            int(commits) if commits is not None else 0,
            {name: {_text(k): v for k, v in content.items()} for name, content in zip(hashes, contents)},
        )

    def _apply_batch(self, b: Batch, client: Any) -> Awaitable[Any]:
        names = sorted(b.offsets)
        return self._apply(keys=[f"{b.base}:commits", *(f"{b.base}:{n}" for n in names)],
                           args=[str(b.commits), msgspec.msgpack.encode(b.commands), *(str(b.offsets[n]) for n in names)],
                           client=client)

    async def commit(self, batches: Sequence[Batch]) -> list[int | None]:
        """Apply each batch atomically with its offset; the new commit count, or None where the
        partition's state had moved on under another worker."""
        if not batches:
            return []
        if isinstance(self.redis, RedisCluster):
            # Each partition's keys live on the node of its hash tag; a cluster pipes no scripts.
            results = await asyncio.gather(*(self._apply_batch(b, self.redis) for b in batches))
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for b in batches:
                    await self._apply_batch(b, pipe)
                results = await pipe.execute()
        applied: list[int | None] = []
        for b, (ok, commits) in zip(batches, results):
            if not ok:
                log.warning("state of %s moved on (commit %s) elsewhere; reloading", b.base, _text(commits))
            applied.append(int(commits) if ok else None)
        return applied


@dataclass(frozen=True)
class Snapshot:
    offsets: dict[str, int]
    commits: int
    hashes: dict[str, dict[str, bytes]]


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
