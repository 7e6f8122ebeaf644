"""Operator tools around the runtime: simulate a city, replay a recording, publish events, watch
the city live, run a stage in process, and benchmark."""
