"""Every stage at the paper's class count: 10,000 classes through the `lit` command line, time and peak memory.

`lit toy-inat --wide 10000` writes a dataset in the official iNat2021 layout (the real category
table when ../shared/data/inat2021-categories.csv is there, else a generated taxonomy of the same
depth) with 2 training images per class and V validation images per class, V = 1 and 3. Every
stage then runs as its own subprocess of the `lit` CLI, as a user runs it: shards (train, val),
embed (train, val), cached training, eval, calibrate, probe, export --onnx (verified on every
validation image), predict with the checkpoint and with the export, and a few `lit serve`
requests. Each stage is measured on its own: wall seconds, the kernel's high-water RSS of its
largest process (wait4), and the sum of the proportional set size (PSS) of its whole process tree
(DataLoader and writer workers included), sampled from /proc every SAMPLE_S seconds.

The model is lit-tiny's towers (32-px ViT, 2-layer text) with their output width set to 768,
ViT-L/14's: every structure that holds an embedding per image or per class (the caches, the
classifier, calibration's and the probe's feature matrices) has the paper's width, so its memory
per image and per class transfers; the towers' compute does not (their per-image cost is not
ViT-L/14's). From the two validation sizes at a fixed class count (and, for `lit shards` and `lit embed`
of the training split, a long run on the training split listed REPLICAS times), each stage's growth in
images is measured and projected to iNat2021 (100,000 validation, 2,686,843 training images). The
raw result is kept with the section in BENCHMARKS.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import _common as common
from bench._proctree import SHIM, Stage, bare_env, run_stage, serve_stage
from bench._scale_params import (
    CLASSES,
    EMBED_DIM,
    EPOCHS,
    IMAGE_SIZE,
    MB,
    PHOTOS,
    PROBE_EPOCHS,
    REPLICAS,
    REQUESTS,
    SAMPLES_PER_EPOCH,
    TRAIN_PER_CLASS,
    VAL_PER_CLASS,
)
from bench._scale_report import project, rows

# ---------------------------------------------------------------------------------------------- the pipeline


def model_config() -> dict[str, Any]:
    """lit-tiny's towers with ViT-L/14's output width."""
    cfg = json.loads((common.REPO / "lit" / "model_configs" / "lit-tiny.json").read_text())
    return {**cfg, "embed_dim": EMBED_DIM}


def job_yaml(work: Path, root: Path, train_images: int, samples_per_epoch: int = SAMPLES_PER_EPOCH) -> Path:
    import yaml

    job = {
        "run_dir": str(work / "run"),
        "model": {"name": "lit-tiny", "config": model_config(), "image_weights": ""},
        "data": {"root": str(root), "train_shards": str(work / "shards" / "train"), "val_shards": str(work / "shards" / "val"),
                 "image_source": "cached", "train_embeddings": str(work / "emb" / "train"),
                 "val_embeddings": str(work / "emb" / "val"), "batch_size": 256, "workers": 2, "shuffle_buffer": 1000,
                 "samples_per_epoch": samples_per_epoch},
        "shards": {"samples_per_shard": max(1, min(2500, train_images // 4)), "workers": 2},
        "train": {"epochs": EPOCHS, "warmup_steps": 10, "lr": 1.0e-3, "device": "cpu", "log_every": 10, "tensorboard": False},
        "checkpoint": {"every_steps": 0, "keep_last": 1},
        "eval": {"final": False, "every_epochs": 0, "batch_size": 256},
    }
    path = work / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def pipeline(work: Path, val_per_class: int, classes: int = CLASSES, photos: int = PHOTOS, requests: int = REQUESTS,
             categories_csv: Path | None = None, samples_per_epoch: int = SAMPLES_PER_EPOCH, log: Any = print) -> dict[str, Any]:
    """Every stage once on a fresh dataset with `val_per_class` validation images per class; the stages and the export's check."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs = work / "logs"
    stages: dict[str, Stage] = {}

    def stage(name: str, *args: str) -> None:
        log(f"  scale V={val_per_class}: lit {name} ...")
        stages[name] = run_stage(name, args, logs / f"{name.replace(' ', '_').replace('-', '')}.log", work)
        s = stages[name]
        log(f"    {s.wall_s:.1f} s ({s.cpu_s:.1f} CPU s, load {s.load:.1f}), peak {s.peak / MB:,.0f} MB (largest process {s.hwm_rss / MB:,.0f}, tree PSS "
            f"{s.tree_pss / MB:,.0f}, {s.processes} processes)")

    root = work / "inat"
    stage("toy-inat", "toy-inat", str(root), "--wide", str(classes), "--train-per-class", str(TRAIN_PER_CLASS),
          "--val-per-class", str(val_per_class), "--image-size", str(IMAGE_SIZE),
          *(["--categories-csv", str(categories_csv)] if categories_csv else []))
    job = str(job_yaml(work, root, classes * TRAIN_PER_CLASS, samples_per_epoch))
    for split in ("train", "val"):
        stage(f"shards {split}", "shards", job, "--split", split, "--no-progress")
    for split in ("train", "val"):
        stage(f"embed {split}", "embed", str(work / "shards" / split), str(work / "emb" / split), job)
    stage("train", "train", job)
    stage("eval", "eval", str(work / "run"), "--data", str(work / "emb" / "val"), "--no-tables", "--no-progress")
    stage("calibrate", "calibrate", str(work / "run"), "--no-progress")
    stage("probe", "probe", job, "--epochs", str(PROBE_EPOCHS))
    stage("export --onnx", "export", str(work / "run"), str(work / "export"), "--onnx")
    listing = work / "photos.txt"
    chosen = sorted((root / "val").rglob("*.jpg"))[:photos]
    listing.write_text("\n".join(str(p) for p in chosen) + "\n")
    stage("predict RUN", "predict", str(work / "run"), str(listing), "--out", str(work / "predict-run.jsonl"), "--no-progress")
    stage("predict EXPORT", "predict", str(work / "export"), str(listing), "--out", str(work / "predict-export.jsonl"),
          "--no-progress")
    log(f"  scale V={val_per_class}: lit serve ...")
    stages["serve"] = serve_stage(work / "export", chosen[:requests], logs / "serve.log", work, requests)
    s = stages["serve"]
    log(f"    ready in {s.extra['ready_s']:.1f} s, p50 {s.extra['latency_p50_ms']:.0f} ms, peak {s.peak / MB:,.0f} MB")

    manifest = json.loads((work / "export" / "manifest.json").read_text())
    check = manifest["verification"]
    probe = json.loads((work / "run" / "probe" / "results.json").read_text())
    same = _agreement(work / "predict-run.jsonl", work / "predict-export.jsonl")
    return {
        "val_per_class": val_per_class, "val_images": classes * val_per_class, "train_images": classes * TRAIN_PER_CLASS,
        "classes": classes, "photos": len(chosen), "samples_seen": EPOCHS * samples_per_epoch,
        "stages": {n: {"wall_s": s.wall_s, "cpu_s": s.cpu_s, "load": round(s.load, 2), "peak_bytes": s.peak, "hwm_rss_bytes": s.hwm_rss, "tree_pss_bytes": s.tree_pss,
                       "tree_rss_bytes": s.tree_rss,
                       "tree_anon_bytes": s.tree_anon, "processes": s.processes, **s.extra} for n, s in stages.items()},
        "export_check": {k: check[k] for k in ("images", "ok", "top1_same", "top1_differs", "near_ties", "near_tie_top1_differs",
                                               "decisive_top1_differs", "score_max_abs_diff", "score_bound", "near_tie_margin",
                                               "max_abs_diff", "tolerance") if k in check},
        "export_classes": manifest.get("classes"),
        "probe": {"seconds": probe.get("seconds"), "fit_seconds": probe.get("fit_seconds"),
                  "train_samples": probe.get("setup", {}).get("train_samples"), "dim": probe.get("setup", {}).get("dim")},
        "predict_top1_agree": same,
        "uptime": _uptime(),
    }


def _agreement(a: Path, b: Path) -> dict[str, int]:
    rows_a = [json.loads(line) for line in a.read_text().splitlines() if line.strip()]
    rows_b = [json.loads(line) for line in b.read_text().splitlines() if line.strip()]
    same = sum(x["guesses"][0]["taxon"] == y["guesses"][0]["taxon"] for x, y in zip(rows_a, rows_b))
    return {"rows": min(len(rows_a), len(rows_b)), "top1_same": int(same)}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------- the probe's feature read, alone

FEATURE_READ = """import gc, json, resource, sys
from lit.data.folders import open_folder
from lit.eval.probe import read_features
peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]
for path in sys.argv[1:]:
    x = read_features(open_folder(path, "data.train_embeddings", "lit embed"))
    del x
    gc.collect()
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps(peaks))
"""


def feature_read(folders: Sequence[tuple[int, Path]], cwd: Path) -> dict[str, Any]:
    """`lit probe` holds a split's features at once: the high-water RSS of `read_features` alone on growing folders.

    One bare process reads the folders smallest first (a high-water mark only rises): the
    slope of the marks is the bytes the read needs per image at this width.
    """
    folders = sorted(folders)
    maxrss = cwd / "feature-read.maxrss"
    proc = subprocess.run([sys.executable, "-S", "-c", SHIM, str(maxrss), sys.executable, "-c", FEATURE_READ,
                           *(str(p) for _, p in folders)], capture_output=True, text=True, cwd=cwd, env=bare_env(), timeout=600)
    maxrss.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"read_features exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    images = [n for n, _ in folders]
    slope = _slope(images, peaks[1:])
    return {"images": images, "peak_bytes": peaks[1:], "base_bytes": peaks[0], "bytes_per_image": slope}


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# ---------------------------------------------------------------------------------------------- the benchmark


def measure(work: Path, val_per_class: Sequence[int] = VAL_PER_CLASS, classes: int = CLASSES, photos: int = PHOTOS,
            requests: int = REQUESTS, samples_per_epoch: int = SAMPLES_PER_EPOCH, log: Any = print) -> dict[str, Any]:
    """The pipeline once per validation size (photos for predict: `photos` x V), the probe's read alone, the projection."""
    csv = common.CATEGORIES_CSV if common.CATEGORIES_CSV.is_file() else None
    runs = []
    for v in sorted(val_per_class):
        runs.append(pipeline(work / f"v{v}", v, classes=classes, photos=photos * v, requests=requests, categories_csv=csv,
                             samples_per_epoch=samples_per_epoch, log=log))
    first = work / f"v{runs[0]['val_per_class']}"
    long = long_run(first, REPLICAS, log)
    folders = [(r["val_images"], work / f"v{r['val_per_class']}" / "emb" / "val") for r in runs]
    folders += [(runs[0]["train_images"], first / "emb" / "train"), (long["images"], first / "emb" / f"train{REPLICAS}")]
    log("  scale: the probe's feature read alone ...")
    feature = feature_read(sorted(set(folders)), work)
    return {"runs": runs, "long": long, "feature_read": feature, "categories": str(csv) if csv else "a generated 7-rank taxonomy",
            "projection": [p.__dict__ for p in project(runs, feature, long)]}


def long_run(work: Path, replicas: int, log: Any = print) -> dict[str, Any]:
    """`lit shards` and `lit embed` once more on the training split listed `replicas` times (new ids, the same files).

    The training-split stages are projected from 20,000 images to 2.7M: a slope taken between
    10,000 and 30,000 validation images carries its noise 134-fold, and an allocator that settles
    after the first few thousand images looks like growth. This run puts a point REPLICAS times further out,
    and its timeline says whether the peak still rose over its second half.
    """
    root = work / "inat"
    data = json.loads((root / "train.json").read_text())
    step_img = max(int(i["id"]) for i in data["images"]) + 1
    step_ann = max(int(a["id"]) for a in data["annotations"]) + 1
    big = {**data, "images": [{**i, "id": i["id"] + k * step_img} for k in range(replicas) for i in data["images"]],
           "annotations": [{**a, "id": a["id"] + k * step_ann, "image_id": a["image_id"] + k * step_img}
                           for k in range(replicas) for a in data["annotations"]]}
    split = f"train{replicas}"
    (root / f"{split}.json").write_text(json.dumps(big))
    job, stages = str(work / "job.yaml"), {}
    for name, args in (("shards train", ["shards", job, "--split", split, "--out", str(work / "shards" / split), "--no-progress"]),
                       ("embed train", ["embed", str(work / "shards" / split), str(work / "emb" / split), job])):
        log(f"  scale, training split x{replicas}: lit {name} ...")
        st = run_stage(name, args, work / "logs" / f"long-{name.replace(' ', '_')}.log", work)
        log(f"    {st.wall_s:.1f} s ({st.cpu_s:.1f} CPU s, load {st.load:.1f}), peak {st.peak / MB:,.0f} MB")
        half = max([b for t, b in st.timeline if t <= st.wall_s / 2] or [0])
        stages[name] = {"wall_s": st.wall_s, "cpu_s": st.cpu_s, "load": round(st.load, 2), "peak_bytes": st.peak,
                        "hwm_rss_bytes": st.hwm_rss, "tree_pss_bytes": st.tree_pss, "tree_anon_bytes": st.tree_anon,
                        "processes": st.processes, "second_half_rise_bytes": st.tree_pss - half}
    return {"replicas": replicas, "images": len(big["images"]), "stages": stages}


def run() -> list[dict[str, Any]]:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="lit-scale-"))
    try:
        return rows(measure(work))
    finally:
        if not os.environ.get("LIT_SCALE_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
