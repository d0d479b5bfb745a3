"""Measured data: profiler-trace ingest, the device campaigns' harnesses, and validation of
the engine against what real GPUs did."""
