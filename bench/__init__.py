"""Benchmarks: jupyternetes-ssa against `kubectl apply --server-side` and a direct create loop.

Run with ``nox -s bench`` or ``python -m bench.run --help``; BENCHMARKS.md holds the latest figures
and how to read them. The pure parts (metric parsing, request attribution, statistics, tables)
are unit-tested in tests/unit/test_bench.py; the rest drives a real cluster.
"""
