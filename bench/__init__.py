"""Benchmarks (run with `make bench`); each module prints JSON lines, never asserts timings."""
