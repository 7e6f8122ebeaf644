"""The city map's reader, on the real broker: every stage that finds it started finds it read."""

from __future__ import annotations

import asyncio

from schemas.reference import Segment
from streams.reference import Reference


def test_stages_asking_at_once_all_wait_for_the_whole_map(city_run):
    run = city_run()
    segments = [Segment(f"S{i:04d}", f"Road {i}", "Z1", "local", 1.0, 30.0, 1) for i in range(3000)]
    run.publish([("segments", s.segment_id, s) for s in segments])

    async def go() -> list[int]:
        reference = Reference(run.settings)

        async def stage() -> int:
            await reference.start()
            return len(reference.city.segments)

        try:
            return await asyncio.gather(*(stage() for _ in range(4)))
        finally:
            await reference.stop()

    assert asyncio.run(go()) == [3000] * 4
