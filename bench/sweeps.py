"""`python -m bench.sweeps [SWEEP_DIR ...]`: put the measured experiment sweeps into BENCHMARKS.md.

The sweeps (`make ablation`, `make divergence`, `make ablation-recipe`, with `THREADS=N`; jobs/sweeps/siglip-bias.yaml) take
minutes to an hour, so `make bench` does not run them; after they ran, this tool renders each
sweep folder's report.json (its statistics, `launcher.compare`) as a section of BENCHMARKS.md with
the machine (`SWEEP_DIR/machine.json`) and the date it ran, replacing that sweep's earlier section.
Nothing is re-run or recomputed here: what a reader sees is what the sweep's own report says.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import RAW, REPO, machine, markdown
from launcher.compare import markdown as analysis_markdown

DEFAULT = ("runs/sweeps/ablation-warmup", "runs/sweeps/ablation-warmup-threads1", "runs/sweeps/divergence-grid",
           "runs/sweeps/ablation-recipe", "runs/sweeps/siglip-bias")
TITLES = {"ablation-warmup": "Warm-up ablation in miniature (make ablation)",
          "ablation-warmup-threads1": "Warm-up ablation with 1 thread per member (make ablation THREADS=1)",
          "divergence-grid": "Divergence in miniature: learning rate x warm-up (make divergence)",
          "ablation-recipe": "Loss and caption recipe beside the probe (make ablation-recipe)",
          "siglip-bias": "The sigmoid loss's initial bias (python -m launcher ablation --sweep-file jobs/sweeps/siglip-bias.yaml)"}


def section(folder: Path) -> dict[str, Any] | None:
    """The BENCHMARKS section of one sweep folder, or None when it has no report yet."""
    report = folder / "report.json"
    if not report.is_file():
        return None
    data = json.loads(report.read_text())
    info = json.loads((folder / "machine.json").read_text()) if (folder / "machine.json").is_file() else {}
    when = dt.datetime.fromtimestamp(report.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    members = data.get("members", [])
    finished = [m for m in members if m.get("outcome") == "finished"]
    head = (f"`{folder.name}`: {len(members)} members ({len(finished)} finished) of `{Path(data.get('job', '')).name}`, "
            f"report of {when}, on {info.get('cpu', 'a machine not recorded')} ({info.get('cores', '?')} cores, "
            f"{info.get('torch_threads', '?')} torch thread(s) per member, torch {info.get('torch', '?')}). Common overrides: `"
            + " ".join(data.get("overrides", [])) + "`. Rendered by `python -m bench.sweeps` from the sweep's report.json.")
    lines = [head, *analysis_markdown(data.get("analysis") or {})]
    return {"benchmark": f"sweep {folder.name}", "date": when, "machine": info.get("cpu", "a machine not recorded"),
            "section": TITLES.get(folder.name, f"Sweep {folder.name}"), "markdown": "\n".join(lines)}


def merge(folders: list[Path], raw: Path = RAW, md: Path = REPO / "BENCHMARKS.md") -> int:
    """Replace the sections of these sweeps in BENCHMARKS.json/.md; the other figures stay."""
    found = [s for s in (section(f) for f in folders) if s is not None]
    if not found:
        print("no sweep report found (run make ablation / make divergence first): nothing merged", file=sys.stderr)
        return 1
    previous: dict[str, Any] = json.loads(raw.read_text()) if raw.is_file() else {}
    names = {s["benchmark"] for s in found}
    sections = [s for s in previous.get("sections", []) if s["benchmark"] not in names] + found
    info = previous.get("machine") or machine()
    date = previous.get("date") or found[0]["date"]
    results = previous.get("results", [])
    raw.write_text(json.dumps({**previous, "machine": info, "results": results, "sections": sections}, indent=1) + "\n")
    md.write_text(markdown(results, info, date, sections))
    print(f"merged {', '.join(sorted(names))} into {raw.name} and {md.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweeps", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help=f"sweep folders (default: those of {', '.join(DEFAULT)} that exist)")
    args = parser.parse_args(argv)
    return merge(args.folders or [REPO / d for d in DEFAULT])


if __name__ == "__main__":
    raise SystemExit(main())
