"""Benchmarks: `python -m bench [NAME ...]` (or `make bench`).

Each module here with a `run() -> list[dict]` function is a benchmark. A result dict has
`benchmark`, `metric`, `unit`, `values` (one per repeat, at least 3), and optionally
`goal` (a floor for `values`' median), `params` and `note`. A dict with `section` (a title)
and `markdown` instead is prose rendered after the table (a projection, a profile). `__main__`
prints them, regenerates `BENCHMARKS.md` with its raw numbers in `BENCHMARKS.json`, and archives
each run under `bench/out/runs/`.

Modules with a leading underscore are helpers, not benchmarks.
"""
