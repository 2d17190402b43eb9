"""`python -m bench.gpu_check --out DIR` (`make gpu-check`): every GPU figure the project promises, in one bounded run.

Parts, each timed, given a time budget and its peak GPU memory recorded:
- doctor: `lit doctor`'s runtime checks with the paper job's config (arch list vs the GPU, cuDNN, NCCL);
- train: the paper shape with random weights (frozen ViT-L-14 + the 12-layer 384-wide text tower),
  a few optimizer steps on the raw and on the cached path in fp32, amp_fp16 (GradScaler active)
  and amp_bf16 where the GPU has it: samples/s, loss finite;
- embed: `lit embed` images/s over generated 500x375 JPEGs with the ViT-L-14 tower in fp32 and
  amp_fp16, against the tower-only forward rate on the same GPU;
- zeroshot: the classifier of 10,000 class names (the shared reference data when present, else
  generated) and a cached evaluation pass through `lit.eval.runner.evaluate_model`.
Writes DIR/gpu_check.json and DIR/gpu_check.md; `python -m bench --gpu DIR/gpu_check.json` puts the
figures into BENCHMARKS.md/json as GPU rows. Without a GPU every part runs at a tiny CPU shape (the
code paths are checked, no figure is reported as a GPU figure), the output says that the GPU parts
were skipped, and it exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PAPER_JOB = REPO / "jobs" / "inat21-vitl14-warmup1000.yaml"
CATEGORIES_CSV = REPO.parent / "shared" / "data" / "inat2021-categories.csv"
BUDGET_S = {"doctor": 30.0, "train": 170.0, "embed": 150.0, "zeroshot": 90.0}
"""Seconds per part (the whole run stays under 8 minutes); a part past its budget skips what is left of it."""


@dataclass
class Part:
    """One part's figures, notes and timing."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_gib: float | None = None
    error: str = ""
    started: float = field(default_factory=time.perf_counter)

    def row(self, metric: str, unit: str, value: float, **extra: Any) -> None:
        self.rows.append({"metric": metric, "unit": unit, "values": [round(float(value), 4)], **extra})

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > BUDGET_S[self.name]


@dataclass(frozen=True)
class Setup:
    """Where the check runs and at what shape."""

    device: torch.device
    gpu: str
    batch: int
    steps: int
    images: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def sync(setup: Setup) -> None:
    if setup.cuda:
        torch.cuda.synchronize()


@contextlib.contextmanager
def measured(part: Part, setup: Setup) -> Iterator[Part]:
    """Time the part, record its peak GPU memory, and keep going past its errors (they are reported)."""
    if setup.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    part.started = time.perf_counter()
    try:
        yield part
    except Exception as err:  # a failing part must not hide the others' figures
        part.error = f"{type(err).__name__}: {err}"
        part.notes.append(traceback.format_exc(limit=4))
    sync(setup)
    part.seconds = round(time.perf_counter() - part.started, 2)
    if setup.cuda:
        part.peak_gib = round(torch.cuda.max_memory_allocated() / 2**30, 2)


def model_config(setup: Setup) -> dict[str, Any]:
    """The paper shape on a GPU; the tiny test model on the CPU."""
    import open_clip

    if not setup.cuda:
        return json.loads((REPO / "lit" / "model_configs" / "lit-tiny.json").read_text())
    vit = open_clip.get_model_config("ViT-L-14")
    text = {"context_length": 77, "vocab_size": 49408, "width": 384, "heads": 6, "layers": 12}
    return {"embed_dim": vit["embed_dim"], "vision_cfg": vit["vision_cfg"], "text_cfg": text}


def job_config(setup: Setup, work: Path, precision: str, source: str, **data: str) -> Any:
    from lit.config import load_config

    overrides = [
        f"run_dir={work / 'run'}", "name=gpu-check", "model.name=gpu-check", "model.image_weights=",
        f"model.config={json.dumps(model_config(setup))}", f"train.precision={precision}", f"data.image_source={source}",
        f"data.batch_size={setup.batch}", f"train.device={setup.device.type}", "data.augment=false", "data.workers=2",
        *(f"data.{k}={v}" for k, v in data.items()),
    ]
    return load_config(None, overrides)


def precisions(setup: Setup) -> list[str]:
    if not setup.cuda:
        return ["fp32"]
    return ["fp32", "amp_fp16"] + (["amp_bf16"] if torch.cuda.is_bf16_supported() else [])


# ---------------------------------------------------------------- parts


def part_doctor(setup: Setup, part: Part, out: Path) -> None:
    from rich.console import Console

    from lit.config import load_config
    from lit.doctor import DeviceQuery, ok, report, runtime_checks

    checks = runtime_checks(DeviceQuery.from_torch(), load_config(PAPER_JOB))
    console = Console(record=True, width=140, file=open("/dev/null", "w"))  # noqa: SIM115 (recorded, not shown)
    console.print(report(checks))
    (out / "doctor.txt").write_text(console.export_text())
    part.notes.append(f"lit doctor with {PAPER_JOB.name}: {'all ok' if ok(checks) else 'FAILED'} "
                      f"({sum(c.status == 'warn' for c in checks)} warnings); table in doctor.txt")
    part.row("checks failed", "count", sum(c.status == "fail" for c in checks))


def image_size(setup: Setup) -> int:
    return int(model_config(setup)["vision_cfg"].get("image_size", 224))


def batch(setup: Setup, cached: bool, dim: int, context: int, vocab: int) -> dict[str, Any]:
    size = image_size(setup)
    images = torch.randn(setup.batch, dim) if cached else torch.randn(setup.batch, 3, size, size)
    tokens = torch.randint(1, vocab, (setup.batch, context))
    return {"images": images, "tokens": tokens, "labels": torch.arange(setup.batch)}


def part_train(setup: Setup, part: Part, work: Path) -> None:
    from lit import dist
    from lit.model import build_model
    from lit.train.loop import Trainer

    info = dist.DistInfo(rank=0, world_size=1, local_rank=0, source="single")
    cfg = job_config(setup, work, "fp32", "raw")
    built = build_model(cfg.model, setup.device, seed=0)
    text = model_config(setup)["text_cfg"]
    dim = int(model_config(setup)["embed_dim"])
    for source in ("cached", "raw"):
        for precision in precisions(setup):
            if part.over_budget():
                part.notes.append(f"budget reached: {source} {precision} and later skipped")
                return
            cfg = job_config(setup, work, precision, source)
            trainer = Trainer(cfg, built, info, setup.device, total_steps=setup.steps + 2)
            b = batch(setup, source == "cached", dim, int(text["context_length"]), int(text["vocab_size"]))
            trainer.train_step([b])  # warm-up: kernels, allocator, cuDNN autotuning
            sync(setup)
            tick = time.perf_counter()
            losses = [trainer.train_step([b])["loss"] for _ in range(setup.steps)]
            sync(setup)
            rate = setup.batch * setup.steps / (time.perf_counter() - tick)
            finite = all(torch.isfinite(torch.tensor(losses)).tolist())
            scaler = trainer.scaler.is_enabled()
            part.row(f"train {source} {precision}, batch {setup.batch}", "samples/s", rate, loss_finite=finite,
                     grad_scaler=scaler)
            if not finite:
                part.error = f"non-finite loss on the {source} path in {precision}: {losses}"
            if precision == "amp_fp16" and not scaler:
                part.error = "amp_fp16 ran without its GradScaler"


def part_embed(setup: Setup, part: Part, work: Path) -> Path | None:
    from lit.config import CaptionConfig, ShardConfig
    from lit.data.embed import embed_folder
    from lit.data.shards import build_shards
    from lit.data.toy import SPECIES, write_toy_inat
    from lit.model import build_model, clip_api

    per_class = max(1, setup.images // len(SPECIES))
    root = write_toy_inat(work / "toy", seed=0, train_per_class=1, val_per_class=per_class, test_per_class=0,
                          image_size=(500, 375))
    shards = work / "shards"
    build_shards(root, "val", shards, ShardConfig(samples_per_shard=256, workers=2, shuffle=False), CaptionConfig(),
                 progress=False)
    images = per_class * len(SPECIES)
    out: Path | None = None
    for precision in precisions(setup)[:2]:
        if part.over_budget():
            part.notes.append(f"budget reached: lit embed {precision} skipped")
            break
        cfg = job_config(setup, work, precision, "raw")
        emb = work / f"emb-{precision}"
        tick = time.perf_counter()
        embed_folder(cfg, shards, emb, batch_size=min(256, setup.batch), dtype="float16", device=setup.device.type)
        part.row(f"lit embed {precision}, {images} JPEGs 500x375", "images/s", images / (time.perf_counter() - tick))
        out = out or emb
    tower = clip_api(build_model(job_config(setup, work, "fp32", "raw").model, setup.device, seed=0).model)
    x = torch.randn(setup.batch, 3, image_size(setup), image_size(setup), device=setup.device)
    for precision in precisions(setup)[:2]:
        amp = torch.autocast("cuda", dtype=torch.float16) if precision == "amp_fp16" else contextlib.nullcontext()
        with torch.no_grad(), amp:
            tower.encode_image(x)
            sync(setup)
            tick = time.perf_counter()
            for _ in range(setup.steps):
                tower.encode_image(x)
            sync(setup)
        part.row(f"tower-only forward {precision}, batch {setup.batch}", "images/s",
                 setup.batch * setup.steps / (time.perf_counter() - tick))
    embed_rates = {r["metric"].split(",")[0].split()[-1]: r["values"][0] for r in part.rows if r["metric"].startswith("lit embed")}
    tower_rates = {r["metric"].split(",")[0].split()[-1]: r["values"][0] for r in part.rows if r["metric"].startswith("tower-only")}
    for precision, rate in embed_rates.items():
        if tower_rates.get(precision):
            part.row(f"lit embed / tower-only forward, {precision}", "ratio", rate / tower_rates[precision])
    return out


def class_names(setup: Setup) -> tuple[list[Any], str]:
    """The 10,000 real iNat2021 classes when the shared data is here, else as many generated ones."""
    from lit.data.inat import Category, load_categories_csv

    if CATEGORIES_CSV.is_file():
        cats = load_categories_csv(CATEGORIES_CSV)
        return (cats if setup.cuda else cats[:64]), f"real iNat2021 classes ({CATEGORIES_CSV.name})"
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    count = 10_000 if setup.cuda else 64
    cats = []
    for i in range(count):
        genus = "".join(rng.choice(letters) for _ in range(8)).capitalize()
        species = "".join(rng.choice(letters) for _ in range(9))
        cats.append(Category(id=i, name=f"{genus} {species}", common_name=f"Common {genus}", supercategory="Plants",
                             kingdom="Plantae", phylum="Tracheophyta", class_="Magnoliopsida", order="Lamiales",
                             family="Lamiaceae", genus=genus, specific_epithet=species))
    return cats, f"{count} generated class names ({CATEGORIES_CSV} is absent)"


def part_zeroshot(setup: Setup, part: Part, work: Path, embeddings: Path | None) -> None:
    from lit import dist
    from lit.eval.runner import evaluate_model
    from lit.eval.templates import resolve_templates
    from lit.eval.zeroshot import build_classifier
    from lit.model import build_model

    cfg = job_config(setup, work, "amp_fp16" if setup.cuda else "fp32", "cached",
                     **({"val_embeddings": str(embeddings)} if embeddings else {}))
    built = build_model(cfg.model, setup.device, seed=0)
    cats, source = class_names(setup)
    sets = resolve_templates(cfg.eval.templates, cfg.captions)
    sync(setup)
    tick = time.perf_counter()
    weights = build_classifier(built.model, built.tokenizer, cats, sets, device=setup.device)
    sync(setup)
    part.row(f"classifier build, {len(cats)} classes, templates {'+'.join(cfg.eval.templates)}", "s",
             time.perf_counter() - tick, classes=source)
    part.notes.append(f"classifier {tuple(weights.shape)} from {source}")
    if embeddings is None or part.over_budget():
        part.notes.append("cached evaluation pass skipped (no embeddings from the embed part, or budget reached)")
        return
    info = dist.DistInfo(rank=0, world_size=1, local_rank=0, source="single")
    tick = time.perf_counter()
    result = evaluate_model(cfg, built, info, subset=0, write_results=False)
    part.row(f"cached evaluation pass, {result['num_samples']} samples", "samples/s",
             result["num_samples"] / (time.perf_counter() - tick))


# ---------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check: {report['gpu'] or 'no GPU'}", "", f"- Date: {report['date']}",
             f"- torch {report['torch']} (CUDA {report['cuda'] or 'none'}), Python {report['python']}",
             f"- Total: {report['seconds']} s"]
    if not report["gpu"]:
        lines.append("- **GPU parts skipped: no CUDA GPU is visible.** Every part ran at a tiny CPU shape to check its "
                     "code path; none of these numbers is a GPU figure.")
    lines += ["", "| part | metric | unit | value | peak GPU GiB |", "|---|---|---|---:|---:|"]
    for p in report["parts"]:
        for r in p["rows"]:
            lines.append(f"| {p['name']} | {r['metric']} | {r['unit']} | {r['values'][0]:,.2f} | {p['peak_gib'] or '-'} |")
        if p["error"]:
            lines.append(f"| {p['name']} | ERROR | | {p['error'][:200]} | |")
    lines += ["", "## Notes", ""] + [f"- {p['name']}: {n.strip()}" for p in report["parts"] for n in p["notes"]]
    return "\n".join(lines) + "\n"


def check(out: Path, batch: int | None = None) -> dict[str, Any]:
    """Run every part; returns the report (also written to OUT)."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)  # every figure from scratch: a kept embedding would time nothing
    cuda = torch.cuda.is_available()
    setup = Setup(device=torch.device("cuda" if cuda else "cpu"), gpu=torch.cuda.get_device_name(0) if cuda else "",
                  batch=batch or (256 if cuda else 8), steps=10 if cuda else 2, images=2048 if cuda else 32)
    started = time.perf_counter()
    parts: list[Part] = []
    runs: list[tuple[str, Callable[[Part], Any]]] = [
        ("doctor", lambda p: part_doctor(setup, p, out)),
        ("train", lambda p: part_train(setup, p, work / "train")),
    ]
    embeddings: list[Path | None] = [None]
    runs.append(("embed", lambda p: embeddings.__setitem__(0, part_embed(setup, p, work / "embed"))))
    runs.append(("zeroshot", lambda p: part_zeroshot(setup, p, work / "zeroshot", embeddings[0])))
    for name, go in runs:
        print(f"gpu-check: {name} ...", flush=True)
        part = Part(name)
        with measured(part, setup):
            go(part)
        parts.append(part)
        print(f"gpu-check: {name} {part.seconds} s" + (f", ERROR {part.error}" if part.error else ""), flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "gpu": setup.gpu, "torch": torch.__version__,
        "cuda": torch.version.cuda or "", "python": platform.python_version(), "batch": setup.batch,
        "seconds": round(time.perf_counter() - started, 1), "gpu_parts_skipped": not cuda,
        "parts": [{k: v for k, v in vars(p).items() if k != "started"} for p in parts],
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "gpu", help="folder for gpu_check.json/.md")
    parser.add_argument("--batch", type=int, default=None, help="per-step batch (default 256 on a GPU, 8 on the CPU)")
    args = parser.parse_args(argv)
    report = check(args.out, args.batch)
    print((args.out / "gpu_check.md").read_text())
    if report["gpu_parts_skipped"]:
        print("gpu-check: no CUDA GPU: the GPU parts were skipped (each part ran at a tiny CPU shape instead)")
        return 0
    return 1 if any(p["error"] for p in report["parts"]) else 0


if __name__ == "__main__":
    sys.exit(main())
