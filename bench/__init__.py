"""Benchmark of the read commands on a large store: `python -m bench` (see docs/benchmarks.md)."""
