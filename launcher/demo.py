"""`python -m launcher demo` (`make demo`): the whole job on the embedded default, offline, in minutes.

Toy iNat data → caption column selection → shards → cached frozen-tower embeddings → the location
prior → LiT training of the embedded default model through the local executor with 2 processes,
preempted half way and resumed → zero-shot evaluation beside the paper's Table 1, image-only and
with the prior. A second run reuses what is built.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from rich.panel import Panel

from launcher import logger
from launcher.local import RunSummary, run_local
from launcher.spec import world_size
from lit import stages
from lit.config import Config, load_config, with_overrides
from lit.data.captions import caption, print_scores, score_columns
from lit.data.cli_captions import default_tokenizer
from lit.data.folders import open_folder
from lit.data.inat import load_split
from lit.data.toy import write_toy_inat
from lit.eval.report import print_report
from lit.log import console
from lit.prior.store import prior_dir
from lit.runlog import Eval, Metric, MetricsLog, Start, Stop, Train

DEMO = ["name=demo", "run_dir=runs/demo", "cluster=local", "slurm.tasks_per_node=2"]
SHARD_OVERRIDES = ["shards.samples_per_shard=128"]  # the toy set is small: enough shards for 2 ranks x 2 workers
ARTIFACTS = ("config.yaml", "metrics.jsonl", "checkpoints/", "plots/training.png", "plots/accuracy.png", "results.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides of the embedded default")
    parser.add_argument("--no-preempt", action="store_true", help="do not send the half-way preemption signal")
    parser.add_argument("--train-per-class", type=int, default=40, help="toy training images per species")
    parser.add_argument("--val-per-class", type=int, default=10, help="toy validation images per species")


def _step(n: int, title: str) -> None:
    console.rule(f"[bold cyan]{n}. {title}")


def prepare_data(cfg: Config, train_per_class: int = 40, val_per_class: int = 10) -> None:
    """Steps 1-3: toy dataset, captions, shards, cached embeddings (the library's stages: a re-run keeps what is complete)."""
    root = Path(cfg.data.root)
    _step(1, f"toy iNat2021 dataset in {root}")
    if (root / "val.json").is_file():
        console.print(f"reusing {root}")
    else:
        write_toy_inat(root, seed=0, train_per_class=train_per_class, val_per_class=val_per_class)
    train = load_split(root, "train")
    console.print(f"{len(train.images)} training images of {len(train.categories)} species, "
                  f"{len({c.supercategory for c in train.categories})} supercategories")

    _step(2, "captions: which metadata columns tell every class apart")
    tokenize, _, tokenizer_name = default_tokenizer()
    print_scores(score_columns(train.categories, tokenize), console, top=8, tokenizer_name=tokenizer_name)
    for category in train.categories[:4]:
        console.print(f"  [green]{caption(category, cfg.captions.recipe, cfg.captions.prefix)}[/green]")
    prep = with_overrides(cfg, SHARD_OVERRIDES)
    stages.run_shards(prep, never)

    _step(3, "cache the frozen image tower's embeddings (once; a re-run keeps complete shards)")
    start = time.perf_counter()
    stages.run_embed(prep, never)
    for _, _, out in stages.splits(cfg):
        console.print(f"{open_folder(out, 'data.embeddings').samples} embeddings in {out}")
    console.print(f"({time.perf_counter() - start:.1f} s)")


def train_prior(cfg: Config) -> None:
    """Step 4: the location prior from the training images' places (kept when complete)."""
    _step(4, "location prior: where and when each species is seen (lit prior)")
    start = time.perf_counter()
    stages.run_prior(cfg, never)
    summary = json.loads((prior_dir(cfg) / "summary.json").read_text())
    console.print(f"{summary['observations']} located training images of {summary['classes']} species "
                  f"({summary['skipped']} without a place, skipped) → {prior_dir(cfg) / 'prior.pt'} "
                  f"({time.perf_counter() - start:.1f} s)")


def never() -> bool:
    """A stage's `should_stop` when nothing asks it to stop."""
    return False


class MetricsTail(threading.Thread):
    """Prints the run's progress from metrics.jsonl while the local job trains in other processes."""

    def __init__(self, path: Path, every: int) -> None:
        super().__init__(daemon=True)
        self.path, self.every, self.stopped = path, every, threading.Event()
        self.offset = path.stat().st_size if path.exists() else 0

    def __enter__(self) -> MetricsTail:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join()
        self.poll()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.poll()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.readlines()
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # half-written: read it next time
        self.offset += sum(len(line) for line in lines)
        for record in MetricsLog.parse(json.loads(line) for line in lines):
            self.show(record)

    def show(self, r: Metric) -> None:
        if isinstance(r, Train) and r.step % self.every == 0:
            console.print(f"  step {r.step:>4}  loss {r.loss if r.loss is not None else float('nan'):.3f}  lr {r.lr or 0.0:.1e}  "
                          f"{r.get('samples_per_s', 0):.0f} samples/s")
        elif isinstance(r, Start):
            where = f"resumed from {r.resumed_from}" if r.resumed_from else "fresh start"
            console.print(f"  [bold]start[/bold] at step {r.step} ({where}, {r.world_size} ranks)")
        elif isinstance(r, Stop):
            console.print(f"  [yellow]stop[/yellow] at step {r.step}: {r.reason}")
        elif isinstance(r, Eval):
            console.print(f"  eval at step {r.step}: top-1 {r.top1 or 0.0:.1f}%, top-5 {r.top5 or 0.0:.1f}%")


def train(cfg: Config, preempt: bool) -> RunSummary:
    """Step 5: LiT training through the launcher's local executor, preempted half way."""
    world = world_size(cfg)
    samples = cfg.data.samples_per_epoch or open_folder(cfg.data.train_embeddings, "data.train_embeddings").samples
    total = samples // (cfg.data.batch_size * world * cfg.train.accum_steps) * cfg.train.epochs
    half = max(1, total // 2)
    _step(5, f"LiT training: {cfg.model.name}, {world} processes, {total} steps"
             + (f"; preemption signal at step {half}" if preempt else ""))
    every = cfg.train.log_every * max(1, total // (10 * cfg.train.log_every))  # a multiple of the logged steps
    with MetricsTail(Path(cfg.run_dir) / "metrics.jsonl", every=every):
        summary = run_local(cfg, preempt_at_step=half if preempt else None)
    if summary.error:
        raise RuntimeError(f"training failed: {summary.error}")
    if summary.preempted_at is not None:
        console.print(Panel(
            f"preempted at step {summary.preempted_at}: checkpoint saved at a step both ranks agreed on, "
            f"the job restarted and resumed from it ({summary.attempts} attempts, finished at step {summary.final_step})",
            title="preemption survived", border_style="yellow"))
    elif summary.attempts <= 1 and preempt:
        console.print("[yellow]the run was already past the preemption point (a second `make demo` reuses the run)[/yellow]")
    return summary


def show_results(cfg: Config) -> dict:
    """Step 6: the zero-shot tables beside the paper's Table 1 (image-only and with the prior), the artifacts left behind."""
    _step(6, "zero-shot evaluation on the toy validation set")
    run_dir = Path(cfg.run_dir)
    result = json.loads((run_dir / "results.json").read_text())
    print_report(result, console, hardest=5)
    artifacts = ARTIFACTS + (("tensorboard/",) if cfg.train.tensorboard else ())
    missing = [a for a in artifacts if not (run_dir / a).exists()]
    if missing:
        raise RuntimeError(f"the demo left no {', '.join(missing)} in {run_dir}")
    console.print(f"[bold]left in {run_dir}/:[/bold] " + ", ".join(artifacts))
    return result


def demo(overrides: list[str], preempt: bool = True, train_per_class: int = 40, val_per_class: int = 10) -> dict:
    """Run the whole demo; returns results.json."""
    cfg = load_config(None, [*DEMO, *overrides])
    start = time.perf_counter()
    prepare_data(cfg, train_per_class, val_per_class)
    train_prior(cfg)
    summary = train(cfg, preempt)
    result = show_results(cfg)
    chance = 100.0 / max(1, result["num_classes"])
    with_prior = result.get("prior")
    gain = (f"; with the location prior {with_prior['top1']:.1f}% ({with_prior['gain_top1']:+.1f})" if with_prior else "")
    console.print(f"[bold green]zero-shot top-1 {result['top1']:.1f}% (chance {chance:.1f}%), "
                  f"top-5 {result['top5']:.1f}%{gain} in {time.perf_counter() - start:.0f} s[/bold green]")
    logger.info("demo finished: %d attempts, final step %d", summary.attempts, summary.final_step)
    return result


def run(args: argparse.Namespace) -> int:
    demo(list(args.overrides), preempt=not args.no_preempt, train_per_class=args.train_per_class, val_per_class=args.val_per_class)
    return 0
