"""Benchmarks of b24app (not part of the test suite): `python -m benchmarks.run` runs the quick set.

Each `bench_*.py` module has `run(full: bool = False, **options) -> Report` and a `main()` for its own
command line; `reporting` holds the shared statistics, machine description and table printing.
"""
