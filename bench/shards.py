"""Shard building images/s against plain `tar` of the same image files, in the same run.

The data: toy iNat images at a typical iNat size (500x375, 50-70 KB JPEGs), generated
once into bench/out/data. Each repeat times `tar -cf` of the train images, then
`build_shards` of the same split (captions, JSON, sha256, manifest included); the ratio
is taken per repeat, so both sides see the same machine load.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from lit.config import CaptionConfig, ShardConfig
from lit.data.inat import load_split
from lit.data.shards import build_shards
from lit.data.toy import SPECIES, write_toy_inat

IMAGES = 2016  # 63 per toy class
SIZE = (500, 375)
QUALITY = 92
REPEATS = 5
RESIZE_REPEATS = 3
RESIZE = 224
GOAL_RATIO = 0.5
OUT = Path(__file__).resolve().parent / "out"


def dataset() -> Path:
    """The benchmark images (generated once, reused by later runs)."""
    per_class = -(-IMAGES // len(SPECIES))
    root = OUT / "data" / f"toy-{per_class}x{len(SPECIES)}-{SIZE[0]}x{SIZE[1]}-q{QUALITY}"
    if not (root / "train.json").is_file():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_toy_inat(tmp, seed=0, train_per_class=per_class, val_per_class=0, test_per_class=0, image_size=SIZE, quality=QUALITY)
        tmp.rename(root)
    return root


def _time_tar(root: Path, listing: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["tar", "-cf", str(out), "-C", str(root), "-T", str(listing)], check=True)
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def _time_build(root: Path, out: Path, cfg: ShardConfig) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build_shards(root, "train", out, cfg, CaptionConfig(), progress=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


def run() -> list[dict[str, Any]]:
    root = dataset()
    files = [img.file_name for img in load_split(root, "train").images]
    mean_kb = statistics.fmean((root / f).stat().st_size for f in files) / 1e3
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    listing = work / "files.txt"
    listing.write_text("\n".join(files) + "\n")
    workers = max(1, min(8, os.cpu_count() or 1))
    cfg = ShardConfig(samples_per_shard=256, workers=workers)
    _time_tar(root, listing, work / "plain.tar")  # warm the page cache and the imports
    _time_build(root, work / "shards", cfg)
    tar_ips, shard_ips, ratios = [], [], []
    for _ in range(REPEATS):
        t_tar = _time_tar(root, listing, work / "plain.tar")
        t_build = _time_build(root, work / "shards", cfg)
        tar_ips.append(len(files) / t_tar)
        shard_ips.append(len(files) / t_build)
        ratios.append(t_tar / t_build)
    resize_cfg = ShardConfig(samples_per_shard=256, workers=workers, resize=RESIZE)
    resize_ips = [len(files) / _time_build(root, work / "shards", resize_cfg) for _ in range(RESIZE_REPEATS)]
    params = {"images": len(files), "size": f"{SIZE[0]}x{SIZE[1]}", "mean_kb": round(mean_kb, 1), "workers": workers,
              "samples_per_shard": cfg.samples_per_shard}
    return [
        {"metric": "plain tar", "unit": "images/s", "values": tar_ips, "params": params},
        {"metric": "lit shards (original bytes)", "unit": "images/s", "values": shard_ips},
        {"metric": "lit shards / tar", "unit": "ratio", "values": ratios, "goal": GOAL_RATIO,
         "note": "end to end: validation, plan, captions, tar members, sha256, manifest; ratio per repeat"},
        {"metric": f"lit shards (--resize {RESIZE})", "unit": "images/s", "values": resize_ips,
         "note": "decode, resize, re-encode (no goal)"},
    ]
