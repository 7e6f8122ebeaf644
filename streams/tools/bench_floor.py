"""A faust worker that only takes events off a topic: the cost of a stream path per event.

`citybrain bench` runs it next to the real pipeline, once on faust's stock path (events taken
in batches by `take_events`) and once on the batch path the workers use (streams/batching.py,
one event per fetched partition batch), so the figures show what each path costs and what the
city brain's work adds. Run as `python -m streams.tools.bench_floor worker` with BENCH_TOPIC,
BENCH_EVENTS, BENCH_GROUP and BENCH_PATH (stock or batch) set.
"""

from __future__ import annotations

import os
import time

import faust

from streams import batching
from streams.settings import settings

_s = settings()
batch_path = os.environ.get("BENCH_PATH", "stock") == "batch"
app = faust.App(
    os.environ.get("BENCH_GROUP", "bench-floor"),
    broker=f"{batching.SCHEME if batch_path else 'kafka'}://{_s.kafka_bootstrap}",
    value_serializer="raw",
    key_serializer="raw",
    topic_allow_declare=False,
    web_port=_s.web_port,
    stream_buffer_maxsize=16 if batch_path else max(4096, 2 * _s.batch_max),
    consumer_auto_offset_reset="earliest",
)
events_wanted = int(os.environ.get("BENCH_EVENTS", "0"))
progress = {"taken": 0, "first": 0.0}


@app.agent(app.topic(os.environ.get("BENCH_TOPIC", "traffic.readings")))
async def take_only(stream):
    # Each item is a list of events: a fetched partition batch, or what take_events gathered.
    async for events in (stream if batch_path else stream.take_events(_s.batch_max, _s.batch_within_s)):
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
