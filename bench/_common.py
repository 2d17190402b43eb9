"""What the benchmarks share: toy data and shards at 224 px, the two model shapes, interleaved repeats.

Nothing here is a benchmark (the leading underscore keeps it out of `python -m bench`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip

from lit.config import CaptionConfig, ShardConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
LIT = [sys.executable, "-m", "lit"]
CATEGORIES_CSV = REPO.parent / "shared" / "data" / "inat2021-categories.csv"

# The paper's shape: ViT-L-14's image tower (frozen), a 384-wide, 12-layer, 6-head text tower (~41M).
PAPER_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 384, "heads": 6, "layers": 12}


@dataclass(frozen=True)
class Shape:
    """A model shape and how the trainers are run on it."""

    key: str
    label: str
    config: dict[str, Any]
    batch_size: int
    steps: int  # steps each trainer runs; the first `warmup` are not measured
    warmup: int = 1

    def config_file(self) -> Path:
        """The open_clip model config as a JSON file named after the shape (open_clip_train takes it by name)."""
        path = OUT / "models" / f"bench-{self.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.config, indent=1)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        return path


def paper_shape(batch_size: int = 4, steps: int = 5) -> Shape:
    vit = open_clip.get_model_config("ViT-L-14")
    cfg = {"embed_dim": vit["embed_dim"], "vision_cfg": vit["vision_cfg"], "text_cfg": dict(PAPER_TEXT)}
    return Shape("paper", "ViT-L-14 frozen + 384w/12L text", cfg, batch_size, steps)


def small_shape(batch_size: int = 16, steps: int = 5) -> Shape:
    return Shape("small", "ViT-S-32 frozen + its 384w/12L text", dict(open_clip.get_model_config("ViT-S-32")), batch_size, steps)


def text_config() -> dict[str, Any]:
    """The paper shape's text side (projecting into ViT-L-14's 768) on ViT-S-32's small image tower.

    For figures of the text side alone (cached training steps, classifier builds): the same
    text FLOPs as the paper's shape, without building a 300M-parameter tower that never runs.
    """
    return {"embed_dim": 768, "vision_cfg": open_clip.get_model_config("ViT-S-32")["vision_cfg"], "text_cfg": dict(PAPER_TEXT)}


def build(config: dict[str, Any], name: str) -> Any:
    """lit's model factory on an inline config, random init, frozen image tower, on the CPU."""
    from lit.config import ModelConfig
    from lit.model import build_model

    return build_model(ModelConfig(name=name, config=config, image_weights=""), "cpu", seed=0)


def categories() -> tuple[list[Any], str]:
    """iNat2021's 10,000 categories, or the toy ones with a note when the CSV is absent."""
    from lit.data.inat import load_categories_csv
    from lit.data.toy import toy_categories

    if CATEGORIES_CSV.is_file():
        return load_categories_csv(CATEGORIES_CSV), f"the 10,000 real classes of {CATEGORIES_CSV.name}"
    return toy_categories(), f"the 32 toy classes ({CATEGORIES_CSV} is absent)"


def toy_root(train_per_class: int, val_per_class: int, size: int | tuple[int, int] = 224, quality: int = 90) -> Path:
    """Toy iNat images (generated once, with a progress bar; reused by later runs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from lit.data.toy import SPECIES, write_toy_inat

    w, h = (size, size) if isinstance(size, int) else size
    root = OUT / "data" / (f"toy-{train_per_class}-{val_per_class}-{w}x{h}" + (f"-q{quality}" if quality != 90 else ""))
    if not (root / "train.json").is_file():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with Progress(TextColumn("[bold]drawing benchmark images"), BarColumn(), MofNCompleteColumn()) as bar:
            tid = bar.add_task("images", total=(train_per_class + val_per_class) * len(SPECIES))
            write_toy_inat(tmp, seed=0, train_per_class=train_per_class, val_per_class=val_per_class, test_per_class=0,
                           image_size=(w, h), quality=quality, on_image=lambda: bar.advance(tid))
        tmp.rename(root)
    return root


def shards(root: Path, split: str, samples_per_shard: int) -> Path:
    """`lit shards` of one split (built once): the folder both trainers read."""
    from lit.data.shards import build_shards

    out = OUT / "data" / f"{root.name}-{split}-shards{samples_per_shard}"
    if not (out / "manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        build_shards(root, split, out, ShardConfig(samples_per_shard=samples_per_shard, workers=1, shuffle=split == "train"),
                     CaptionConfig(), progress=False)
    return out


def brace_pattern(folder: Path) -> str:
    """The folder's shards as one brace pattern (`train-{000000..000003}.tar`), as open_clip_train wants them."""
    names = [e["name"] for e in json.loads((folder / "manifest.json").read_text())["shards"]]
    stem = names[0].rsplit("-", 1)[0]
    return str(folder / f"{stem}-{{{names[0].rsplit('-', 1)[1][:6]}..{names[-1].rsplit('-', 1)[1][:6]}}}.tar")


def run_logged(cmd: Sequence[str], log: Path, cwd: Path | None = None, timeout: float = 900) -> float:
    """Run a command with its output in `log`; returns wall seconds. Raises with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb", "COLUMNS": "200", "PYTHONPATH": path}
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... exited {proc.returncode}:\n{tail}")
    return wall


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_cores(window: float = 1.0) -> float:
    """Cores kept busy by other processes over `window` seconds (this process sleeps meanwhile)."""
    try:
        b0, t0 = _cpu_jiffies()
        time.sleep(window)
        b1, t1 = _cpu_jiffies()
    except (OSError, ValueError, IndexError):
        return 0.0
    return (os.cpu_count() or 1) * (b1 - b0) / max(1, t1 - t0)


# Other processes' CPU use seen at the start of each measured run (the machine is shared).
EXTERNAL_LOAD: list[float] = []


def settle(threshold: float = 0.5, max_wait: float = 20.0, window: float = 0.5) -> float:
    """Flush pending writes, then wait (at most `max_wait` s) until others use < `threshold` cores; returns their use."""
    os.sync()  # a previous run's checkpoint writes must not throttle the next run's writes
    deadline = time.monotonic() + max_wait
    load = busy_cores(window)
    while load >= threshold and time.monotonic() < deadline:
        load = busy_cores(window)
    EXTERNAL_LOAD.append(round(load, 2))
    return load


def interleaved(variants: dict[str, Callable[[], float]], repeats: int, max_wait: float = 20.0) -> dict[str, list[float]]:
    """Each variant once per round, the order rotated every round, so all see the same machine load.

    Before each run the machine gets a moment to settle (`settle`): a busy shared machine
    still adds noise, which the min/max show.
    """
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            settle(max_wait=max_wait)
            out[n].append(variants[n]())
    return out


def external_load() -> dict[str, float]:
    """Summary of EXTERNAL_LOAD (busy cores of other processes when runs started), then reset it."""
    seen = EXTERNAL_LOAD[:] or [0.0]
    EXTERNAL_LOAD.clear()
    return {"median": round(statistics.median(seen), 2), "max": round(max(seen), 2), "runs": len(seen)}


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Pair-by-pair ratios of two interleaved series."""
    return [a / b for a, b in zip(num, den)]




def jpegs(root: Path, split: str) -> list[bytes]:
    """The bytes of a toy split's JPEGs, read once (a decode measurement reads no disk)."""
    from lit.data.inat import load_split

    return [(root / img.file_name).read_bytes() for img in load_split(root, split).images]


def decode_rate(data: Sequence[bytes], transform: Callable[[Any], Any]) -> Callable[[], float]:
    """A run of images/s on one core: PIL decode of each JPEG to RGB, then `transform` (as a loader worker runs it)."""
    import io

    import torch
    from PIL import Image

    def go() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a loader worker runs single-threaded
        try:
            start = time.perf_counter()
            for raw in data:
                transform(Image.open(io.BytesIO(raw)).convert("RGB"))
            return len(data) / (time.perf_counter() - start)
        finally:
            torch.set_num_threads(threads)
    return go


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (DataLoader workers once joined, tar, writers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
