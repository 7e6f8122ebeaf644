"""A faust worker that only takes batches of events off a topic: faust's own cost per event.

`citybrain bench` runs it next to the real pipeline, so the figures show how much of the
pipeline's time is the framework's stream path and how much is the city brain's work.
Run as `python -m streams.bench_floor worker` with BENCH_TOPIC, BENCH_EVENTS and BENCH_GROUP set.
"""

from __future__ import annotations

import os
import time

import faust

from streams.settings import settings

_s = settings()
app = faust.App(
    os.environ.get("BENCH_GROUP", "bench-floor"),
    broker=f"kafka://{_s.kafka_bootstrap}",
    value_serializer="raw",
    key_serializer="raw",
    topic_allow_declare=False,
    web_port=_s.web_port,
    stream_buffer_maxsize=max(4096, 2 * _s.batch_max),
    consumer_auto_offset_reset="earliest",
)
events_wanted = int(os.environ.get("BENCH_EVENTS", "0"))
progress = {"taken": 0, "first": 0.0}


@app.agent(app.topic(os.environ.get("BENCH_TOPIC", "traffic.readings")))
async def take_only(stream):
    async for events in stream.take_events(_s.batch_max, _s.batch_within_s):
        if not progress["taken"]:
            progress["first"] = time.perf_counter()
        progress["taken"] += len(events)
        if progress["taken"] >= events_wanted:
            # Timed from the first batch, as the pipeline is.
            # faust turns sys.stdout into a logger: write to the descriptor the bench reads.
            os.write(1, f"drained {progress['taken'] - len(events)} {time.perf_counter() - progress['first']}\n".encode())
            progress["taken"] = -(10**12)


if __name__ == "__main__":
    app.main()
