"""Benchmarks: figures, not pass/fail tests. `make bench` runs them all; never run in CI."""
