"""Benchmarks: `python -m bench [NAME ...]` (or `make bench`).

Each module here with a `run() -> list[dict]` function is a benchmark. A result dict has
`benchmark`, `metric`, `unit`, `values` (one per repeat, at least 3), and optionally
`goal` (a floor for `values`' median), `params` and `note`. A dict with `section` (a title)
and `markdown` instead is prose rendered after the table (a projection, a profile). `__main__`
prints them, writes `bench/out/results.json` and regenerates `BENCHMARKS.md`.

Modules with a leading underscore are helpers, not benchmarks.
"""
