"""`python -m launcher ablation` (`make ablation`): the paper's warm-up effect in miniature, locally, in minutes.

On the harder toy set (`lit toy-inat --hard`: 96 look-alike species) and the embedded default
model, a sweep run by the local executor, then the linear-probe ceiling of the same frozen
features and the report with its intervals and plots. `--grid` picks the sweep (settings and why
in the sweep files and docs/experiments.md):
- `warmup` (default): three warm-up lengths x five seeds at a learning rate high enough for a short
  warm-up to hurt (jobs/sweeps/ablation-warmup.yaml);
- `divergence`: learning rate x warm-up x three seeds, the failed fraction per cell (divergence-grid.yaml);
- `recipe`: loss (clip, siglip) x caption recipe (paper, mixed) x five seeds beside the probe (ablation-recipe.yaml).
`--threads N` runs every member with N torch threads, in its own sweep folder (NAME-threadsN); the
data, shards and cache are shared. A second run reuses the data, the cache and the finished members.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markdown import Markdown

from launcher import logger, sweep
from launcher.report import MACHINE, write_report
from launcher.sweep_spec import Member, SweepSpec, load_spec, resolve
from launcher.sweepdir import SweepDir
from lit.data.toy import write_toy_inat
from lit.errors import UsageError
from lit.eval.probe import ProbeSettings, probe
from lit.io import write_json
from lit.log import console

SWEEPS = Path(__file__).resolve().parents[1] / "jobs" / "sweeps"
GRIDS = {"warmup": SWEEPS / "ablation-warmup.yaml", "divergence": SWEEPS / "divergence-grid.yaml",
         "recipe": SWEEPS / "ablation-recipe.yaml"}
SWEEP_FILE = GRIDS["warmup"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="section.key=value for every member (key=a,b,c adds an axis)")
    parser.add_argument("--grid", choices=list(GRIDS), default="warmup",
                        help="which sweep: warmup (the paper's comparison), divergence (lr x warm-up), recipe (loss x captions)")
    parser.add_argument("--sweep-file", default=None, help="run this sweep file instead of the --grid's")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch threads of every member (default: torch's own, one per core); "
                             "the sweep goes to its own folder NAME-threadsN")


def with_threads(spec: SweepSpec, threads: int) -> SweepSpec:
    """The sweep in its own folder for `threads` torch threads (data, shards and cache stay shared)."""
    if threads < 1:
        return spec
    name = f"{spec.name}-threads{threads}"
    return replace(spec, name=name, sweep_dir=(spec.sweep_dir or f"runs/sweeps/{spec.name}") + f"-threads{threads}")


def use_threads(threads: int) -> None:
    """Every member (a child process) starts with `threads` torch threads; so does this process (the probe)."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


def machine() -> dict[str, Any]:
    """What the members run on: CPU model, cores this process may use, torch threads, torch's version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""), "torch": torch.__version__, "time": round(time.time())}


def check_same(sweep_dir: Path, spec: SweepSpec, members: list[Member], flag: str) -> None:
    """A sweep folder made from another version of the sweep file is not continued silently."""
    stored = SweepDir(sweep_dir).read()
    was = (stored["overrides"], [(m["name"], m["overrides"]) for m in stored["members"]])
    if was != (list(spec.overrides), [(m.name, list(m.overrides)) for m in members]):
        raise UsageError(flag, f"{sweep_dir} holds another sweep than this one (made by an older sweep file or with other "
                               "overrides): move it away or remove it, then run again (the data and the cache are kept)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    spec, path = load_spec(args.sweep_file or GRIDS[args.grid], args.overrides)
    if args.threads:
        use_threads(args.threads)
        spec = with_threads(spec, args.threads)
    sweep_dir, members = resolve(spec, str(path))
    root = Path(members[0].cfg.data.root)
    console.rule("[bold cyan]1. the harder toy set")
    if (root / "val.json").is_file():
        console.print(f"reusing {root}")
    else:
        write_toy_inat(root, seed=0, train_per_class=24, val_per_class=8, test_per_class=0, hard=True)
        console.print(f"wrote {root}: 96 species, 8 families x 3 genera x 4 look-alike species")
    console.rule(f"[bold cyan]2. the sweep {spec.name}: {len(members)} members")
    if SweepDir.is_sweep(sweep_dir):
        check_same(sweep_dir, spec, members, "--sweep-file" if args.sweep_file else "--grid")
        if sweep.todo(SweepDir(sweep_dir)):
            write_json(sweep_dir / MACHINE, machine())
            sweep.resume(sweep_dir)
        else:
            console.print(f"every member of {sweep_dir} has its result: reusing them")
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(sweep_dir / MACHINE, machine())
        sweep.submit(spec, str(path))
    console.rule("[bold cyan]3. the supervised ceiling of the frozen features (linear probe)")
    if not (sweep_dir / "probe" / "results.json").is_file():
        probe(members[0].cfg, ProbeSettings(seed=0), sweep_dir / "probe")
    console.rule("[bold cyan]4. the report")
    report = write_report(sweep_dir)
    console.print(Markdown(report.read_text()))
    console.print(f"[bold green]{spec.name} done in {time.perf_counter() - start:.0f} s[/bold green]: {report}, "
                  f"{sweep_dir / 'plots'}/{{loss,lr,top1}}.png")
    logger.info("ablation: %s", report)
    return 0
