"""Cache the frozen image tower's outputs: one embedding shard per image shard, plus a fingerprinted manifest.

Each sample keeps its key, txt, cls and json and gains `npy` (the tower's output before
normalization, float16 by default). Training on the cache (`data.image_source: cached`) never
decodes a JPEG. Ranks split the shards; a re-run keeps the shards that are already complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from rich.progress import Progress

from lit import dist
from lit.config import Config
from lit.configlib import ConfigError
from lit.data.folders import ShardFolder, open_folder
from lit.io import atomic_file, write_json
from lit.log import console, logger
from lit.model import build_model, clip_api, fingerprint, image_tower_locked

FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}
AMP_DTYPES = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _embed_shard(model: torch.nn.Module, preprocess: Any, url: str, out: Path, batch_size: int,
                 device: torch.device, dtype: Any, amp: torch.dtype | None = None) -> dict[str, Any]:
    """Embed every sample of one shard into `out` (atomically); returns its manifest entry."""
    pipeline = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples(), wds.decode("pil"))
    count, bad = 0, []

    def flush(batch: list[dict[str, Any]], writer: wds.TarWriter) -> None:
        images = torch.stack([preprocess(s["jpg"]) for s in batch]).to(device)
        autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            feats = clip_api(model).encode_image(images, normalize=False).float().cpu().numpy().astype(dtype)
        for s, f in zip(batch, feats):
            writer.write({"__key__": s["__key__"], "npy": f, "txt": s["txt"], "cls": int(s["cls"]), "json": s["json"]})

    with atomic_file(out) as stream:
        writer = wds.TarWriter(stream, encoder=True, mtime=0.0)
        batch: list[dict[str, Any]] = []
        for sample in pipeline:
            if "jpg" not in sample:
                bad.append({"key": sample.get("__key__"), "shard": Path(url).name, "reason": "no jpg"})
                continue
            batch.append(sample)
            count += 1
            if len(batch) == batch_size:
                flush(batch, writer)
                batch = []
        if batch:
            flush(batch, writer)
        writer.close()
    return {"name": out.name, "samples": count, "sha256": _sha256(out), "source": Path(url).name, "skipped": bad}


def embed_folder(cfg: Config, source: str | Path, out: str | Path, batch_size: int = 64,
                 dtype: str = "float16", device: str = "auto") -> dict[str, Any] | None:
    """Embed every shard of `source` into `out`; rank 0 returns the manifest, others None."""
    if dtype not in DTYPES:
        raise ConfigError("", "dtype", f"{dtype!r} is not one of {list(DTYPES)}")
    info = dist.resolve()
    dev = dist.pick_device(info, device)
    dist.init(info, dev)
    folder: ShardFolder = open_folder(source, "source")
    built = build_model(cfg.model, dev, seed=cfg.train.seed)
    # the tower in half precision on GPUs, as training runs it (train.precision); fp32 stays exact on the CPU
    amp = AMP_DTYPES.get(cfg.train.precision) if dev.type == "cuda" else None
    if not image_tower_locked(built.model):
        raise ConfigError("", "model.lock_image", "cached embeddings need a fully locked image tower (model.lock_image=true, model.unlocked_groups=0)")
    model = built.model.eval()
    tower_fp = fingerprint(model, built.preprocess_val)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = _complete_parts(out, tower_fp, dtype)
    mine = [u for i, u in enumerate(folder.urls) if i % info.world_size == info.rank]
    with Progress(console=console, disable=not info.is_main) as progress:
        task = progress.add_task("embed", total=len(mine))
        for url in mine:
            name = "emb-" + Path(url).name
            part = out / f".{name}.json"
            if name not in done:
                entry = _embed_shard(model, built.preprocess_val, url, out / name, batch_size, dev, DTYPES[dtype], amp)
                entry.update(fingerprint=tower_fp, dtype=dtype)
                part.write_text(json.dumps(entry))
            progress.advance(task)
    dist.barrier()
    manifest = None
    if info.is_main:
        manifest = _write_manifest(out, folder, tower_fp, dtype, cfg)
    dist.shutdown()
    return manifest


def _complete_parts(out: Path, tower_fp: str, dtype: str) -> set[str]:
    """Shards already embedded with this tower and dtype whose bytes still match."""
    done = set()
    for part in out.glob(".emb-*.json"):
        entry = json.loads(part.read_text())
        shard = out / entry["name"]
        if entry.get("fingerprint") == tower_fp and entry.get("dtype") == dtype and shard.is_file() and _sha256(shard) == entry["sha256"]:
            done.add(entry["name"])
    return done


def _write_manifest(out: Path, folder: ShardFolder, tower_fp: str, dtype: str, cfg: Config) -> dict[str, Any]:
    entries = [json.loads((out / f".emb-{Path(u).name}.json").read_text()) for u in folder.urls]
    skipped = [s for e in entries for s in e.pop("skipped")]
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "embeddings",
        "fingerprint": tower_fp,
        "model": cfg.model.name,
        "dtype": dtype,
        "source": str(folder.path.resolve()),
        "source_manifest_sha256": _sha256(folder.path / "manifest.json"),
        "shards": entries,
        "total_samples": sum(e["samples"] for e in entries),
        "skipped": skipped,
    }
    if folder.categories_file.is_file():
        shutil.copyfile(folder.categories_file, out / "categories.json")
    write_json(out / "manifest.json", manifest)
    logger.info("embedded %d samples into %d shards in %s (%s)", manifest["total_samples"], len(entries), out, dtype)
    return manifest
