"""K augmented views per image, embedded once: reproducible files, refused when made otherwise, exact resume,
and a cached K-view run that matches a raw run applying the same view seeds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from lit import checkpoint
from lit.config import CaptionConfig, ShardConfig
from lit.configlib import ConfigError
from lit.data.embed import embed_folder
from lit.data.shards import build_shards
from lit.data.views import pick_view
from lit.train.run import run
from tests.conftest import tiny_config

TINY = ["data.image_source=cached", "data.augment=false", "data.workers=1"]


@pytest.fixture(scope="module")
def shards(engine_data: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "shards"
    build_shards(engine_data["root"], "train", out, ShardConfig(samples_per_shard=32, workers=1), CaptionConfig(), progress=False)
    return out


def embed(engine_data: dict, shards: Path, out: Path, *extra: str) -> dict:
    cfg = tiny_config(out.parent / "unused", {**engine_data, "train": shards}, [*TINY, *extra])
    manifest = embed_folder(cfg, shards, out, batch_size=16, dtype="float32", device="cpu", workers=0)
    assert manifest is not None
    return manifest


def vectors(folder: Path) -> dict[str, np.ndarray]:
    urls = sorted(str(p) for p in folder.glob("emb-*.tar"))
    return {s["__key__"]: s["npy"] for s in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.decode())}


def digest(folder: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("emb-*.tar"))]


@pytest.fixture(scope="module")
def caches(engine_data: dict, shards: Path) -> dict[str, Path]:
    base = shards.parent
    embed(engine_data, shards, base / "one")
    embed(engine_data, shards, base / "three", "data.views=3")
    embed(engine_data, shards, base / "three-again", "data.views=3")
    return {"one": base / "one", "three": base / "three", "three-again": base / "three-again"}


def test_k_views_are_reproducible_and_view_0_is_the_plain_one(caches: dict[str, Path]) -> None:
    assert digest(caches["three"]) == digest(caches["three-again"])  # a re-run writes identical files
    plain, three = vectors(caches["one"]), vectors(caches["three"])
    assert plain.keys() == three.keys() and len(plain) == 384
    key = next(iter(plain))
    assert three[key].shape == (3, plain[key].shape[0])
    assert all(np.array_equal(three[k][0], plain[k]) for k in plain)  # view 0: the eval view
    assert not np.allclose(three[key][1], three[key][2])  # the augmented views differ
    import json

    manifest = json.loads((caches["three"] / "manifest.json").read_text())
    assert (manifest["views"], manifest["view_policy"], manifest["view_seed"]) == (3, "crop-flip", 0)


def test_each_epoch_picks_every_view_in_turn_by_key() -> None:
    picks = [[pick_view(0, epoch, str(k), 3) for epoch in range(30)] for k in range(50)]
    assert all(set(p) == {0, 1, 2} for p in picks)
    assert picks == [[pick_view(0, epoch, str(k), 3) for epoch in range(30)] for k in range(50)]  # a pure function
    assert pick_view(0, 5, "17", 1) == 0


def test_a_cache_of_other_views_is_refused_like_another_tower(engine_data: dict, shards: Path, caches: dict[str, Path],
                                                               tmp_path: Path) -> None:
    data = {**engine_data, "train": shards}
    cfg = tiny_config(tmp_path / "run", data, [*TINY, f"data.train_embeddings={caches['three']}", "data.views=3",
                                               "data.view_policy=openclip"])
    with pytest.raises(ConfigError, match=r"data.views: .* holds views made with .*'view_policy': 'crop-flip'"):
        run(cfg)
    cfg = tiny_config(tmp_path / "run2", data, [*TINY, f"data.train_embeddings={caches['one']}", "data.views=3"])
    with pytest.raises(ConfigError, match=r"holds views made with \{'views': 1"):
        run(cfg)


def final(run_dir: Path) -> dict:
    found = checkpoint.choose(run_dir)
    assert found is not None
    return found[1]


def test_a_k_view_run_resumes_bitwise(engine_data: dict, shards: Path, caches: dict[str, Path], tmp_path: Path) -> None:
    data = {**engine_data, "train": shards}
    extra = [*TINY, f"data.train_embeddings={caches['three']}", "data.views=3", "train.epochs=3"]
    assert run(tiny_config(tmp_path / "whole", data, extra)) == 0
    assert run(tiny_config(tmp_path / "parts", data, [*extra, "train.stop_at_step=13"])) == 0
    assert run(tiny_config(tmp_path / "parts", data, extra)) == 0
    a, b = final(tmp_path / "whole")["model"], final(tmp_path / "parts")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cached_views_match_a_raw_run_with_the_same_view_seeds(engine_data: dict, shards: Path, caches: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """Float32 storage: the cached path sees the very features the raw path computes, up to float rounding."""
    data = {**engine_data, "train": shards}
    common = ["data.views=3", "train.epochs=2", "data.workers=1"]
    cached = tiny_config(tmp_path / "cached", data, [*common, "data.image_source=cached", "data.augment=false",
                                                     f"data.train_embeddings={caches['three']}"])
    raw = tiny_config(tmp_path / "raw", data, [*common, "data.image_source=raw", "data.augment=false"])
    assert run(cached) == 0 and run(raw) == 0
    a, b = final(tmp_path / "cached")["model"], final(tmp_path / "raw")["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst  # the stated tolerance; bitwise differences come from batched vs per-step forwards
    cached_once = tiny_config(tmp_path / "one", data, ["train.epochs=2", "data.workers=1", "data.image_source=cached",
                                                        "data.augment=false", f"data.train_embeddings={caches['one']}"])
    assert run(cached_once) == 0
    c = final(tmp_path / "one")["model"]
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-3  # the views do change training
