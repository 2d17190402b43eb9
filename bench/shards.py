"""Shard building images/s against plain `tar` of the same image files, in the same run.

The data: toy iNat images at a typical iNat size (500x375, 50-70 KB JPEGs), generated
once into bench/out/data. Each repeat syncs the disk, times `tar -cf` of the train images,
syncs again and times `build_shards` of the same split (validation, captions, JSON,
sha256, manifest included). The ratio is taken per repeat, so both sides see the same
machine load; CPU seconds per image are reported too, since they do not depend on it.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import _common as common
from lit.config import CaptionConfig, ShardConfig
from lit.data.inat import load_split
from lit.data.shards import build_shards
from lit.data.toy import SPECIES

IMAGES = 6048  # 189 per toy class: start-up (annotations, writer processes) a small share, as on a real split
SIZE = (500, 375)
QUALITY = 92
REPEATS = 5
RESIZE_REPEATS = 3
RESIZE = 224
GOAL_RATIO = 0.5
OUT = common.OUT


def dataset() -> Path:
    """The benchmark images (generated once, reused by later runs)."""
    return common.toy_root(-(-IMAGES // len(SPECIES)), 0, SIZE, quality=QUALITY)


def _cpu() -> float:
    """CPU seconds of this process and of its waited-for children (tar, shard writers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call, after the disk settles (no wait for a quiet machine: the ratio is per repeat)."""
    os.sync()  # the previous run's writes (and deletions) must not stall this one
    wall, cpu = time.perf_counter(), _cpu()
    run()
    return time.perf_counter() - wall, _cpu() - cpu


def _tar(root: Path, listing: Path, out: Path) -> tuple[float, float]:
    times = _timed(lambda: subprocess.run(["tar", "-cf", str(out), "-C", str(root), "-T", str(listing)], check=True))
    out.unlink()
    return times


def _build(root: Path, out: Path, cfg: ShardConfig) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    times = _timed(lambda: build_shards(root, "train", out, cfg, CaptionConfig(), progress=False))
    shutil.rmtree(out)
    return times


def run() -> list[dict[str, Any]]:
    root = dataset()
    files = [img.file_name for img in load_split(root, "train").images]
    n = len(files)
    mean_kb = statistics.fmean((root / f).stat().st_size for f in files) / 1e3
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    listing = work / "files.txt"
    listing.write_text("\n".join(files) + "\n")
    workers = max(1, min(8, os.cpu_count() or 1))
    cfg = ShardConfig(samples_per_shard=256, workers=workers)
    _tar(root, listing, work / "plain.tar")  # warm the page cache and the imports
    _build(root, work / "shards", cfg)
    tar, build = [], []
    for _ in range(REPEATS):  # interleaved: both sides see the same machine load
        tar.append(_tar(root, listing, work / "plain.tar"))
        build.append(_build(root, work / "shards", cfg))
    single = [_build(root, work / "shards", ShardConfig(samples_per_shard=256, workers=1)) for _ in range(RESIZE_REPEATS)]
    resize_cfg = ShardConfig(samples_per_shard=256, workers=workers, resize=RESIZE)
    resized = [_build(root, work / "shards", resize_cfg) for _ in range(RESIZE_REPEATS)]
    params = {"images": n, "size": f"{SIZE[0]}x{SIZE[1]}", "mean_kb": round(mean_kb, 1), "workers": workers,
              "samples_per_shard": cfg.samples_per_shard, "load_average": [round(x, 2) for x in os.getloadavg()]}
    return [
        {"metric": "plain tar", "unit": "images/s", "values": [n / w for w, _ in tar], "params": params},
        {"metric": "lit shards (original bytes)", "unit": "images/s", "values": [n / w for w, _ in build]},
        {"metric": "lit shards / tar", "unit": "ratio", "values": [t[0] / b[0] for t, b in zip(tar, build)],
         "goal": GOAL_RATIO, "note": "wall clock, end to end (validation, plan, captions, tar members, sha256, "
                                     "manifest), ratio per repeat; on a loaded machine the writers get less than their cores"},
        {"metric": "plain tar CPU", "unit": "ms/1k images", "values": [1e6 * c / n for _, c in tar]},
        {"metric": "lit shards CPU", "unit": "ms/1k images", "values": [1e6 * c / n for _, c in build],
         "note": "CPU seconds of all processes: what the build costs whatever the load"},
        {"metric": "lit shards (1 worker)", "unit": "images/s", "values": [n / w for w, _ in single]},
        {"metric": f"lit shards (--resize {RESIZE})", "unit": "images/s", "values": [n / w for w, _ in resized],
         "note": "decode, resize, re-encode (no goal)"},
    ]
