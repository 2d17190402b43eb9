"""The scale benchmark's projection to iNat2021 and its section of BENCHMARKS.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench._scale_params import (
    CLASSES,
    EMBED_DIM,
    EPOCHS,
    GOAL_GB,
    GROWTH_MB,
    IMAGE_SIZE,
    INAT_TRAIN,
    INAT_VAL,
    MB,
    PHOTOS,
    PROBE_EPOCHS,
    REPLICAS,
    REQUESTS,
    SAMPLE_S,
    TRAIN_PER_CLASS,
)

# ---------------------------------------------------------------------------------------------- projection to iNat2021

SAME_CODE = {"shards train": "shards val", "embed train": "embed val"}
"""Training-split stages whose growth per image is measured on the validation split (same command, same images)."""
TRANSFER = {
    "shards train": "no: 32-px JPEGs of ~1 KB; iNat's are ~60 KB at 500x375 (the shards benchmark measures those)",
    "shards val": "no: as shards train",
    "embed train": "no: lit-tiny's 32-px forward on 2 CPU cores, not ViT-L/14 on a GPU (the projection benchmark)",
    "embed val": "no: as embed train",
    "train": "no: lit-tiny's text tower (2 layers, 32 wide) on the CPU; the paper's step is the compute benchmark's",
    "eval": "yes for the scoring (cached 768-d embeddings against 10,000 768-d classes); the class embeddings are built "
            "once by lit-tiny's text tower (the zeroshot benchmark has the paper's)",
    "calibrate": "yes (cached 768-d embeddings, 10,000 classes)",
    "probe": "yes (768-d features, 10,000 classes, the torch solver on this CPU)",
    "export --onnx": "no: the verification runs lit-tiny's tower in torch and in onnxruntime on every validation image",
    "predict RUN": "no: lit-tiny's tower per photo; the 10,000-class scoring does",
    "predict EXPORT": "as predict RUN",
    "serve": "as predict RUN",
}


CODE_HOLDS = {
    "shards": "the whole split's records (`load_split`), planned up front: grows with images from the start of the run, "
              "then flat (the long run's second half adds nothing); iNat's own train.json carries more fields per image "
              "than the toy's, so `json.load`'s transient peak on it is larger than measured here",
    "embed": "streams; the shards in flight (a worker holds two decoded images of its shard, see below); flat once the "
             "allocators settle",
    "train": "streams through a shuffle buffer (data.shuffle_buffer samples)",
    "eval": "streams; 8 B per top-1 miss (the confusion codes, `Counts.errors`)",
    "calibrate": "every validation embedding as fp32 (768 x 4 B), twice while they are concatenated, and its key; "
                 "the logits a chunk at a time",
    "probe": "both splits' features as fp16 (768 x 2 B per image), the weights and AdamW state (10,000 x 768 x 4 x 4 B)",
    "export": "streams the verification; 4 B per image (the margins)",
    "predict": "every prediction of the run (`lit.field.batch`: `predictions += rows`, also with --out): a few KB a photo",
}
"""What each command keeps per image, read from the code (beside what is measured)."""


@dataclass(frozen=True)
class Projection:
    stage: str
    time_model: str
    time_s: float | None
    memory_model: str
    bytes_per_image: float | None
    peak_bytes: float
    grows: bool | None  # None: not varied in this bench


def growth(runs: Sequence[dict[str, Any]], stage: str, key: str, images: str = "val_images") -> tuple[float, bool]:
    """(slope per image, whether it grows) of a stage's `key` between the smallest and largest run."""
    a, b = runs[0], runs[-1]
    n = b[images] - a[images]
    ya, yb = a["stages"][stage][key], b["stages"][stage][key]
    slope = (yb - ya) / n if n else 0.0
    return slope, slope > 0  # a rise within the noise is extended too (conservative); `verdict` says which it is


def _memory_model(slope: float, delta: float, classes: int, unit: str = "image") -> str:
    if slope <= 0:
        return f"constant in {unit}s"
    if delta <= GROWTH_MB * MB:
        return f"flat within noise (+{_mb(delta)} MB); extended anyway: {slope:,.0f} B/{unit}"
    return f"linear in {unit}s: {slope:,.0f} B/{unit}" + (" (images x classes)" if slope >= 2 * classes else "")


def verdict(delta: float, slope: float, unit: str = "image") -> str:
    """Whether a peak that moved by `delta` bytes grew: beyond GROWTH_MB it did; below, run-to-run noise can explain it."""
    if delta > GROWTH_MB * MB:
        return f"**yes**: +{_mb(delta)} MB, {slope:,.0f} B/{unit}"
    if delta > 0:
        return f"within noise: +{_mb(delta)} MB ({slope:,.0f} B/{unit}, projected as if real)"
    return f"no ({_mb(delta)} MB)"


def project(runs: Sequence[dict[str, Any]], feature: dict[str, Any] | None, long: dict[str, Any] | None = None,
            val: int = INAT_VAL, train: int = INAT_TRAIN, epochs: int = 18) -> list[Projection]:
    """Each stage's time and peak memory at iNat2021's sizes, from the two runs (same class count)."""
    first = runs[0]
    out: list[Projection] = []

    def peak(stage: str) -> float:
        more = [long["stages"][stage]["peak_bytes"]] if long and stage in long["stages"] else []
        return float(max([r["stages"][stage]["peak_bytes"] for r in runs] + more))

    def linear(stage: str, ref: dict[str, Any], n_ref: int, n: int, slope_t: float, slope_m: float, grows: bool) -> tuple[float, float]:
        s = ref["stages"][stage]
        return s["wall_s"] + slope_t * (n - n_ref), (s["peak_bytes"] + slope_m * (n - n_ref)) if grows else peak(stage)

    for stage in ("shards train", "shards val", "embed train", "embed val", "eval", "calibrate", "export --onnx"):
        source = SAME_CODE.get(stage, stage)
        slope_t, _ = growth(runs, source, "wall_s")
        slope_m, grows = growth(runs, source, "peak_bytes")
        if long and stage in long["stages"]:  # the training split and its x REPLICAS run: the same command, 4x apart
            pair = [{"train_images": first["train_images"], "stages": {stage: first["stages"][stage]}},
                    {"train_images": long["images"], "stages": long["stages"]}]
            slope_t, _ = growth(pair, stage, "wall_s", "train_images")
            slope_m, grows = growth(pair, stage, "peak_bytes", "train_images")
            t, m = linear(stage, first, first["train_images"], train, slope_t, slope_m, grows)
            where = f"{train:,} training images (slope between {first['train_images']:,} and {long['images']:,})"
        elif stage in SAME_CODE:
            t, m = linear(stage, first, first["train_images"], train, slope_t, slope_m, grows)
            where = f"{train:,} training images (per-image slope of `{source}`)"
        else:
            t, m = linear(stage, first, first["val_images"], val, slope_t, slope_m, grows)
            where = f"{val:,} validation images"
        span = (long["images"] - first["train_images"]) if long and stage in long["stages"] else \
            (runs[-1]["val_images"] - first["val_images"])
        mem = _memory_model(slope_m, slope_m * span, first["classes"])
        out.append(Projection(stage, f"linear in images, {where}", t, mem, slope_m if grows else None, m, grows))

    # Training: time linear in samples seen; memory not varied here (the same 20,000 training images in both runs).
    rate = statistics.fmean(r["samples_seen"] / r["stages"]["train"]["wall_s"] for r in runs)
    out.append(Projection("train", f"linear in samples: {epochs} epochs x {train:,} at {rate:,.0f} samples/s",
                          epochs * train / rate, "not varied (same training set in both runs): a webdataset stream with a "
                          "shuffle buffer, constant by construction", None, peak("train"), None))

    # Probe: all training features in memory at once; the bytes per image of the read measured alone.
    p = first["stages"]["probe"]
    info = first["probe"]
    fixed_s = p["wall_s"] - info["seconds"]  # start-up: imports, model-free setup
    fit_s = info["fit_seconds"]
    eval_s = info["seconds"] - fit_s
    t = fixed_s + fit_s * train / first["train_images"] + eval_s * val / first["val_images"]
    if feature:
        k, dim = feature["bytes_per_image"], int(info.get("dim") or EMBED_DIM)
        base = p["peak_bytes"] - k * first["train_images"]  # V=1: the peak is the read of the training features
        m = max(base + k * train, base + 2 * dim * train + k * val)  # the training split's read; the validation split's on top of it
        mem = f"linear in training images: {k:,.0f} B/image while reading, {2 * dim:,} B/image held (fp16)"
        out.append(Projection("probe", f"linear in training images x epochs ({PROBE_EPOCHS} epochs), 10,000 classes", t, mem, k, m, True))
    else:
        out.append(Projection("probe", "linear in training images x epochs", t, "not measured", None, peak("probe"), None))

    for stage in ("predict RUN", "predict EXPORT"):
        slope_t, _ = growth(runs, stage, "wall_s", "photos")
        slope_m, grows = growth(runs, stage, "peak_bytes", "photos")
        t, m = linear(stage, first, first["photos"], val, slope_t, slope_m, grows)
        mem = _memory_model(slope_m, slope_m * (runs[-1]["photos"] - first["photos"]), first["classes"], "photo")
        out.append(Projection(stage, f"linear in photos: {val:,} photos", t, mem, slope_m if grows else None, m, grows))
    out.append(Projection("serve", "per request (latency at 10,000 classes)", None, "constant (one photo per request)", None,
                          peak("serve"), False))
    return out


def _mb(b: float) -> str:
    return f"{b / MB:,.0f}"


def _gb(b: float) -> str:
    return f"{b / 1e9:,.2f}"


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:,.0f} s" if s < 600 else f"{s / 60:,.0f} min" if s < 36_000 else f"{s / 3600:,.1f} h"


def commands() -> list[str]:
    """The commands every run issues (WORK: the run's folder; V: validation images per class)."""
    csv = " --categories-csv ../shared/data/inat2021-categories.csv"
    return [
        f"lit toy-inat WORK/inat --wide {CLASSES} --train-per-class {TRAIN_PER_CLASS} --val-per-class V --image-size {IMAGE_SIZE}"
        f"{csv} (without --categories-csv when the table is absent)",
        "lit shards WORK/job.yaml --split train --no-progress (and --split val)",
        "lit embed WORK/shards/train WORK/emb/train WORK/job.yaml (and val)",
        "lit train WORK/job.yaml",
        "lit eval WORK/run --data WORK/emb/val --no-tables --no-progress",
        "lit calibrate WORK/run --no-progress",
        f"lit probe WORK/job.yaml --epochs {PROBE_EPOCHS}",
        "lit export WORK/run WORK/export --onnx",
        f"lit shards WORK/job.yaml --split train{REPLICAS} --out WORK/shards/train{REPLICAS} --no-progress, then lit embed "
        f"WORK/shards/train{REPLICAS} WORK/emb/train{REPLICAS} WORK/job.yaml (the long run: train{REPLICAS}.json is train.json "
        f"x {REPLICAS} with new ids)",
        f"lit predict WORK/run PHOTOS.txt --out WORK/predict-run.jsonl --no-progress ({PHOTOS:,} x V validation photos; torch)",
        "lit predict WORK/export PHOTOS.txt --out WORK/predict-export.jsonl --no-progress (onnxruntime)",
        f"lit serve WORK/export --port P, then {REQUESTS} POST /predict (multipart field `file`) one at a time, then SIGTERM",
    ]


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    runs, proj, feature = result["runs"], result["projection"], result["feature_read"]
    first = runs[0]
    out: list[dict[str, Any]] = []
    for r in runs:
        tag = f"{r['val_images']:,} val images"
        for name, s in r["stages"].items():
            out.append({"metric": f"{tag}: lit {name}, wall", "unit": "s", "values": [s["wall_s"]]})
            out.append({"metric": f"{tag}: lit {name}, peak memory", "unit": "MB", "values": [s["peak_bytes"] / MB]})
        c = r["export_check"]
        out.append({"metric": f"{tag}: lit export --onnx verification, top-1 identical", "unit": "images",
                    "values": [c["top1_same"]], "note": f"of {c['images']:,}; near-ties {c['near_ties']:,}, "
                    f"{c['near_tie_top1_differs']} of them flipped, decisive flips {c['decisive_top1_differs']}; scores within "
                    f"{c['score_max_abs_diff']:.2e} of torch's (bound {c['score_bound']:.2e}); ok: {c['ok']}"})
        out.append({"metric": f"{tag}: lit serve POST /predict latency p50", "unit": "ms",
                    "values": [r["stages"]["serve"]["latency_p50_ms"]]})
    long = result["long"]
    for name, s in long["stages"].items():
        tag = f"{long['images']:,} training images (x{long['replicas']})"
        out.append({"metric": f"{tag}: lit {name}, wall", "unit": "s", "values": [s["wall_s"]]})
        out.append({"metric": f"{tag}: lit {name}, peak memory", "unit": "MB", "values": [s["peak_bytes"] / MB]})
    worst = max(proj, key=lambda p: p["peak_bytes"])
    for p in proj:
        out.append({"metric": f"iNat2021 scale (projected): lit {p['stage']}, peak memory", "unit": "GB",
                    "values": [p["peak_bytes"] / 1e9], "note": p["memory_model"]})
    out.append({"metric": f"iNat2021 scale (projected): {GOAL_GB:.0f} GB / the largest stage peak (lit {worst['stage']})",
                "unit": "ratio", "values": [GOAL_GB * 1e9 / worst["peak_bytes"]], "goal": 1.0,
                "note": f"goal: no stage needs more than {GOAL_GB:.0f} GB at 100,000 validation and 2,686,843 training images"})
    out[0]["params"] = {
        "classes": first["classes"], "categories": result["categories"], "train_images": first["train_images"],
        "val_images": [r["val_images"] for r in runs], "photos": [r["photos"] for r in runs], "requests": REQUESTS,
        "model": f"lit-tiny towers, embed_dim {EMBED_DIM} (ViT-L/14's width), random init", "image_size": IMAGE_SIZE,
        "train": f"{EPOCHS} epochs x {first['samples_seen'] // EPOCHS:,} samples, batch 256, cached, CPU",
        "probe_epochs": PROBE_EPOCHS, "workers": 2, "sample_s": SAMPLE_S, "uptime": [r["uptime"] for r in runs],
        "feature_read": {"images": feature["images"], "peak_mb": [round(b / MB) for b in feature["peak_bytes"]],
                         "bytes_per_image": round(feature["bytes_per_image"])},
    }
    out.append({"section": "Scale: the paper's class count", "markdown": markdown(result), "raw": result})
    return out


def markdown(result: dict[str, Any]) -> str:
    runs, proj, feature, long = result["runs"], result["projection"], result["feature_read"], result["long"]
    first, last = runs[0], runs[-1]
    head = " | ".join(f"{r['val_images']:,} val: wall s | CPU s | load | peak MB" for r in runs)
    lines = [
        f"Every stage as its own `lit` subprocess at {first['classes']:,} classes ({result['categories']}): "
        f"{first['train_images']:,} training images ({TRAIN_PER_CLASS} per class) and "
        + " or ".join(f"{r['val_images']:,}" for r in runs) + " validation images (V = "
        + ", ".join(str(r["val_per_class"]) for r in runs) + f" per class), {IMAGE_SIZE}-px JPEGs. The model is lit-tiny's "
        f"towers (random init) with their output width set to {EMBED_DIM}, ViT-L/14's, so every per-image and per-class "
        "embedding (caches, classifier, calibration's and the probe's matrices) has the paper's size. 2 DataLoader/shard "
        f"workers; cached training of {EPOCHS} epochs x {first['samples_seen'] // EPOCHS:,} samples (batch 256); "
        f"`lit probe --epochs {PROBE_EPOCHS}`; `lit predict` on {PHOTOS:,} x V validation photos; `lit serve` answers "
        f"{REQUESTS} requests. After both runs, `lit shards` and `lit embed` run once more on the training split listed "
        f"{long['replicas']} times ({long['images']:,} images, new ids, the same files): the projection of the training "
        f"split's stages reaches 134 times past the data, so they get a point {long['replicas']} times further out.",
        "",
        "Peak memory: the larger of the stage's largest process's high-water RSS (the kernel's, through wait4 of a bare "
        "parent: a fork of the benchmark process would carry its own ~1 GB) and the sampled sum of PSS over the stage's "
        f"whole process tree (workers included; every {SAMPLE_S} s). About 0.6-0.9 GB of every torch stage is the "
        "interpreter with torch and open_clip loaded. Wall times are from a shared 2-core machine: `load` is the 1-minute "
        "load average when the stage started (above 2, other users' work shared the cores and stretched the wall time; "
        "`uptime` after each run: " + "; ".join(f"`{r['uptime'].split('load average:')[-1].strip()}` after "
                                                f"{r['val_images']:,}" for r in runs)
        + "); CPU s (the stage's processes, workers included) is what it cost whatever the load.",
        "",
        f"| stage | {head} | memory grows with images? |",
        "|---|" + "---:|" * (4 * len(runs)) + "---|",
    ]
    for name in first["stages"]:
        cells = " | ".join(f"{r['stages'][name]['wall_s']:,.1f} | {r['stages'][name].get('cpu_s', 0):,.1f} | "
                           f"{r['stages'][name].get('load', 0):.1f} | {_mb(r['stages'][name]['peak_bytes'])}" for r in runs)
        if name in long["stages"]:
            d = long["stages"][name]["peak_bytes"] - first["stages"][name]["peak_bytes"]
            said = (f"{long['images']:,} training images: " + verdict(d, d / (long["images"] - first["train_images"]))
                    + f"; the second half of that run's time raised its tree's PSS by "
                    f"{_mb(long['stages'][name].get('second_half_rise_bytes', 0))} MB")
        elif name == "train":
            said = "not varied: the same training set in both runs (a stream with a shuffle buffer)"
        elif name == "toy-inat":
            said = "makes the data (not a pipeline stage)"
        elif name == "probe":
            said = (f"in training images: holds them all, {feature['bytes_per_image']:,.0f} B/image at its read's peak "
                    "(measured alone, below); the same training set in both runs")
        elif name == "serve":
            said = (f"no: one photo a request (p50 {first['stages'][name]['latency_p50_ms']:.0f} / "
                    f"{last['stages'][name]['latency_p50_ms']:.0f} ms, ready in {first['stages'][name]['ready_s']:.1f} s)")
        else:
            what = "photos" if name.startswith("predict") else "val_images"
            slope, _ = growth(runs, name, "peak_bytes", what)
            said = verdict(last["stages"][name]["peak_bytes"] - first["stages"][name]["peak_bytes"], slope,
                           "photo" if what == "photos" else "image")
        lines.append(f"| lit {name} | {cells} | {said} |")
    lines += [f"| lit {n} ({long['images']:,} training images) | " + " | ".join(
        [f"{s['wall_s']:,.1f} | {s['cpu_s']:,.1f} | {s['load']:.1f} | {_mb(s['peak_bytes'])}"] + ["" for _ in range(4 * len(runs) - 1)])
        + " | (the long run) |" for n, s in long["stages"].items()]
    lines += ["", f"A rise under {GROWTH_MB:.0f} MB is within the run-to-run noise seen for the same work (up to +-50 MB): "
              "it is named so, and still extended linearly in the projection (an upper bound). The peak of a streaming stage "
              "can also climb in steps while the allocator settles (arenas of the main process and of each worker) and then "
              "stay flat: the long run, and how much its second half (by time) still raised the peak, tell the two apart for "
              "the training split. The projection still extends the long run's rise linearly: an upper bound.", ""]
    lines += ["What the code keeps per image (read from it, beside the measurements):", ""]
    lines += [f"- `lit {k}`: {v}" for k, v in CODE_HOLDS.items()]
    lines += ["", "`lit export --onnx` verifies the export on every validation image against torch, margin-aware "
              "(a top-1 flip is allowed only where torch's own margin is within the verified score bound):", "",
              "| validation images | ok | top-1 identical | near-ties | near-tie flips | decisive flips | score max diff | score bound |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        c = r["export_check"]
        lines.append(f"| {c['images']:,} | {c['ok']} | {c['top1_same']:,} | {c['near_ties']:,} | {c['near_tie_top1_differs']:,} | "
                     f"{c['decisive_top1_differs']} | {c['score_max_abs_diff']:.2e} | {c['score_bound']:.2e} |")
    agree = "; ".join(f"{r['predict_top1_agree']['top1_same']:,} of {r['predict_top1_agree']['rows']:,}" for r in runs)
    lines += ["", f"`lit predict EXPORT` (ONNX) and `lit predict RUN` (torch) name the same top-1 species for {agree} photos "
              "(a random tower at 10,000 classes has many near-ties; the export's check above bounds the rest).", ""]
    k = feature["bytes_per_image"]
    lines += [
        f"### Projected to iNat2021: {INAT_VAL:,} validation and {INAT_TRAIN:,} training images, 10,000 classes", "",
        "The class count is already the paper's, so what grows with images x classes grows linearly in images here: each "
        "stage's slope per image is measured between the two validation sizes (for `lit shards` and `lit embed` of the "
        f"training split, between {first['train_images']:,} and {long['images']:,} training images) and extended "
        "linearly; a stage whose peak did not rise is held at its larger peak. A slope near "
        f"{2 * first['classes']:,}+ B per image (a row of 10,000 fp16/fp32 scores) would mark images x classes; "
        f"{EMBED_DIM * 4:,} B is one fp32 {EMBED_DIM}-d embedding. `lit probe` reads a split's features whole "
        f"(`read_features`); measured alone on {', '.join(f'{n:,}' for n in feature['images'])} images it needs "
        f"{k:,.0f} B per image at its peak (high-water {', '.join(_mb(b) for b in feature['peak_bytes'])} MB), which the "
        f"projection applies to the training split. Times are this machine's 2 cores with lit-tiny: the \"transfers\" "
        "column says whether the projected time means anything for ViT-L/14.", "",
        f"| stage | time model | projected time | time transfers to ViT-L/14? | memory model | projected peak GB | <= {GOAL_GB:.0f} GB |",
        "|---|---|---:|---|---|---:|---|",
    ]
    for p in proj:
        ok = "yes" if p["peak_bytes"] <= GOAL_GB * 1e9 else "**NO**"
        lines.append(f"| lit {p['stage']} | {p['time_model']} | {_dur(p['time_s'])} | {TRANSFER.get(p['stage'], '')} | "
                     f"{p['memory_model']} | {_gb(p['peak_bytes'])} | {ok} |")
    over = [p for p in proj if p["peak_bytes"] > GOAL_GB * 1e9]
    nxc = [p for p in proj if (p["bytes_per_image"] or 0) >= 2 * first["classes"]]
    lines += ["", ("Over the goal: " + ", ".join(f"lit {p['stage']} ({_gb(p['peak_bytes'])} GB)" for p in over) + "."
                   if over else f"No stage is projected over {GOAL_GB:.0f} GB.")
              + (" Growing with images x classes: " + ", ".join(f"lit {p['stage']}" for p in nxc) + "." if nxc else
                 " No stage's memory grows with images x classes.")]
    lines += ["", "What does not transfer: the towers' per-image compute (embed, export's verification, predict, serve run "
              "lit-tiny's 32-px tower; iNat's photos are 500x375 and ViT-L/14 runs on a GPU: see the projection and gpu "
              "figures), the training step (lit-tiny's text tower), the JPEG sizes (shards), and the 2 shared cores. What "
              "does: the data sizes (768-d embeddings, 10,000 classes, the number of images), hence memory, and the cached "
              "stages' scoring (eval, calibrate, probe) on the CPU. The photo size does show in `lit embed`'s workers: "
              "each reads its shard one sample ahead (`ShardImages._samples`), so it holds two decoded photos and up to 4 "
              "prefetched batches (4 x 256 x 3 x 224 x 224 fp32 = 0.62 GB at ViT-L/14's input) whatever the shard's size. "
              "Until 2026-12-05 a worker decoded its whole shard first: on one shard of 1,000 500x375 photos (lit-tiny, 1 "
              "worker, batch 256, this Intel Xeon) the tree's anonymous memory was 1,252 MiB then and is 536 MiB now, twice "
              "each, within 5 MiB (~0.56 GB less a worker, ~2.2 GB less for the jobs' 4 workers a rank).", "",
              "Commands (WORK: a temporary folder per run):", ""]
    lines += [f"- `{c}`" for c in commands()]
    return "\n".join(lines)
