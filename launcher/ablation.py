"""`python -m launcher ablation` (`make ablation`): the paper's warm-up effect in miniature, locally, in minutes.

On the harder toy set (`lit toy-inat --hard`: 96 look-alike species) and the embedded default
model, a sweep of three warm-up lengths x two seeds at a learning rate high enough for a short
warm-up to hurt (jobs/sweeps/ablation-warmup.yaml, the settings and why in docs/experiments.md), run by
the local executor; then the linear-probe ceiling of the same frozen features and the report
with its plots. A second run reuses the data, the cache and the finished members.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markdown import Markdown

from launcher import logger, sweep
from launcher.report import write_report
from launcher.sweep_spec import load_spec, resolve
from launcher.sweepdir import SweepDir
from lit.data.toy import write_toy_inat
from lit.eval.probe import ProbeSettings, probe
from lit.log import console

SWEEP_FILE = Path(__file__).resolve().parents[1] / "jobs" / "sweeps" / "ablation-warmup.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="section.key=value for every member (key=a,b,c adds an axis)")
    parser.add_argument("--sweep-file", default=str(SWEEP_FILE), help="the sweep to run (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    spec, path = load_spec(args.sweep_file, args.overrides)
    sweep_dir, members = resolve(spec, str(path))
    root = Path(members[0].cfg.data.root)
    console.rule("[bold cyan]1. the harder toy set")
    if (root / "val.json").is_file():
        console.print(f"reusing {root}")
    else:
        write_toy_inat(root, seed=0, train_per_class=24, val_per_class=8, test_per_class=0, hard=True)
        console.print(f"wrote {root}: 96 species, 8 families x 3 genera x 4 look-alike species")
    console.rule(f"[bold cyan]2. the sweep: {len(members)} members ({', '.join(m.name for m in members)})")
    if SweepDir.is_sweep(sweep_dir):
        if sweep.todo(SweepDir(sweep_dir)):
            sweep.resume(sweep_dir)
        else:
            console.print(f"every member of {sweep_dir} has its result: reusing them")
    else:
        sweep.submit(spec, str(path))
    console.rule("[bold cyan]3. the supervised ceiling of the frozen features (linear probe)")
    if not (sweep_dir / "probe" / "results.json").is_file():
        probe(members[0].cfg, ProbeSettings(seed=0), sweep_dir / "probe")
    console.rule("[bold cyan]4. the report")
    report = write_report(sweep_dir)
    console.print(Markdown(report.read_text()))
    console.print(f"[bold green]ablation done in {time.perf_counter() - start:.0f} s[/bold green]: {report}, "
                  f"{sweep_dir / 'plots'}/{{loss,lr,top1}}.png")
    logger.info("ablation: %s", report)
    return 0
