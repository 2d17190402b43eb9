"""Stages that stop on request and go on: shards and embeddings of an interrupted run equal an uninterrupted one's."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from PIL import Image

from lit.config import CaptionConfig, ShardConfig, load_config
from lit.data.embed import ShardImages, embed_folder
from lit.data.shards import build_shards


def after(n: int):  # noqa: ANN201 (a small stateful predicate)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > n

    return should_stop


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_stopped_shards_resume_byte_identical(engine_data: dict, tmp_path: Path) -> None:
    cfg = ShardConfig(samples_per_shard=16, workers=2)
    whole = build_shards(engine_data["root"], "train", tmp_path / "whole", cfg, CaptionConfig(), progress=False)
    stopped = build_shards(engine_data["root"], "train", tmp_path / "parts", cfg, CaptionConfig(), progress=False,
                           should_stop=after(5))
    assert stopped == {"stopped": True, "split": "train"}
    assert not (tmp_path / "parts" / "manifest.json").exists()
    assert 5 <= len(list((tmp_path / "parts").glob("*.tar"))) < len(whole["shards"])
    again = build_shards(engine_data["root"], "train", tmp_path / "parts", cfg, CaptionConfig(), progress=False)
    assert shard_bytes(tmp_path / "parts") == shard_bytes(tmp_path / "whole")
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in whole["shards"]]


def test_tasks_split_the_shards_and_task_0_writes_the_manifest(engine_data: dict, tmp_path: Path) -> None:
    cfg = ShardConfig(samples_per_shard=16, workers=1)
    whole = build_shards(engine_data["root"], "train", tmp_path / "whole", cfg, CaptionConfig(), progress=False)
    out = tmp_path / "split"
    one = build_shards(engine_data["root"], "train", out, cfg, CaptionConfig(), progress=False, part=(1, 2))
    assert one["part_done"] and one["shards"] == len(whole["shards"]) // 2
    zero = build_shards(engine_data["root"], "train", out, cfg, CaptionConfig(), progress=False, part=(0, 2))
    assert zero["shards"] == whole["shards"] and shard_bytes(out) == shard_bytes(tmp_path / "whole")


@pytest.mark.parametrize("workers", [0, 2])
def test_stopped_embeddings_resume_equal(engine_data: dict, tmp_path: Path, workers: int) -> None:
    cfg = load_config(None, ["model.name=lit-tiny", "model.image_weights=", "data.image_source=raw"])
    shards = tmp_path / "shards"
    build_shards(engine_data["root"], "train", shards, ShardConfig(samples_per_shard=16, workers=1), CaptionConfig(), progress=False)
    whole = embed_folder(cfg, shards, tmp_path / "whole", batch_size=24, dtype="float32", device="cpu", workers=workers)
    assert whole is not None
    stopped = embed_folder(cfg, shards, tmp_path / "parts", batch_size=24, dtype="float32", device="cpu", workers=workers,
                           should_stop=after(3))
    assert stopped is not None and stopped["stopped"] and 0 < stopped["shards_left"] < len(whole["shards"])
    again = embed_folder(cfg, shards, tmp_path / "parts", batch_size=24, dtype="float32", device="cpu", workers=workers)
    assert again is not None
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in whole["shards"]]  # bitwise, batch 24 across shards of 16
    assert again["total_samples"] == whole["total_samples"] == 384


def test_a_worker_holds_two_decoded_images_of_a_shard_not_the_shard(engine_data: dict) -> None:
    """A shard is read one sample ahead (to mark its last sample): at iNat's photo sizes a whole shard would be ~0.5 GB."""
    urls = sorted(str(p) for p in engine_data["train"].glob("*.tar"))
    seen: list[int] = []

    def preprocess(image: Image.Image) -> torch.Tensor:
        gc.collect()
        seen.append(sum(issubclass(type(o), Image.Image) for o in gc.get_objects()))
        return torch.zeros(1)

    items = [item for item, _ in ShardImages(urls[:1], [32], set(), preprocess, batch_size=8)._samples(0)]
    assert len(items) == 32 == len(seen)  # every sample, in order, its image preprocessed
    assert [it.last for it in items] == [-1] * 31 + [32]  # the last one is marked with the shard's count
    assert max(seen) <= 2, seen  # the image being preprocessed and the one read ahead
