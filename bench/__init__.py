"""Benchmarks: `python -m bench [NAME ...]` (or `make bench`).

Each module here with a `run() -> list[dict]` function is a benchmark. A result dict has
`benchmark`, `metric`, `unit`, `values` (one per repeat, at least 3), and optionally
`goal` (a floor for `values`' median), `params` and `note`. `__main__` prints them, writes
`bench/out/results.json` and regenerates `BENCHMARKS.md`.
"""
