"""Generic stream pieces: the faust app, topics, windows, state, reference joins."""
