"""Places travel with the samples: annotation file → shard json → embedding cache → batches (NaN where unknown)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from lit.config import CaptionConfig, ShardConfig, load_config
from lit.data.embed import embed_folder
from lit.data.folders import open_folder
from lit.data.inat import ImageRecord, load_split
from lit.data.loader import Stream, eval_pipeline, sample_place
from lit.data.shards import build_shards, shard_urls

BATCH_KEYS = {"images", "tokens", "labels", "keys", "places", "worker", "bad_samples"}


def _pixels(image: Image.Image) -> torch.Tensor:
    """A minimal preprocess: 8x8 RGB floats, [3, 8, 8]."""
    return torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 8)), np.float32)).permute(2, 0, 1)


def _expected(img: ImageRecord) -> tuple[float | None, float | None, int | None]:
    lat, lon, day = img.place.row()
    return (None if math.isnan(lat) else lat, None if math.isnan(lon) else lon, None if math.isnan(day) else int(day))


def _batches(urls: list[str], cached: bool) -> list[dict[str, Any]]:
    stream = Stream(urls, cached, None if cached else _pixels, None)
    return list(eval_pipeline(stream, rank=0, world=1, batch_size=40))


@pytest.fixture(scope="module")
def val_shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("placed") / "val"
    build_shards(toy_root, "val", out, ShardConfig(samples_per_shard=40, workers=1, shuffle=False), CaptionConfig(),
                 progress=False)
    return out


def test_shard_json_holds_each_images_place(toy_root: Path, val_shards: Path) -> None:
    split = load_split(toy_root, "val")
    by_id = {img.id: img for img in split.images}
    raw = {i["id"]: i for i in json.loads((toy_root / "val.json").read_text())["images"]}
    samples = list(wds.WebDataset(shard_urls(val_shards), shardshuffle=False, empty_check=False))
    assert len(samples) == len(split.images) == 96
    unlocated = 0
    for s in samples:
        meta = json.loads(s["json"])
        img = by_id[meta["image_id"]]
        assert (meta["latitude"], meta["longitude"], meta["day"]) == _expected(img)
        assert meta["latitude"] == raw[img.id]["latitude"] and meta["longitude"] == raw[img.id]["longitude"]  # exact
        assert list(meta)[:7] == ["image_id", "file_name", "category_id", "recipe", "latitude", "longitude", "day"]
        assert meta["species"] == split.category_by_id[img.category_id].name  # the taxonomy follows
        assert isinstance(meta["day"], int) and 1 <= meta["day"] <= 365
        unlocated += meta["latitude"] is None
    assert 0 < unlocated < len(samples) // 4


def test_batches_carry_places_and_nothing_else_changes(toy_root: Path, val_shards: Path) -> None:
    by_id = {img.id: img for img in load_split(toy_root, "val").images}
    batches = _batches(shard_urls(val_shards), cached=False)
    assert [len(b["keys"]) for b in batches] == [40, 40, 16]
    for b in batches:
        assert set(b) == BATCH_KEYS
        places = b["places"]
        assert places.dtype == torch.float32 and places.shape == (len(b["keys"]), 3)
        want = torch.tensor([by_id[int(k)].place.row() for k in b["keys"]], dtype=torch.float32)
        assert torch.equal(places.isnan(), want.isnan()) and torch.equal(places.nan_to_num(), want.nan_to_num())
        assert b["labels"].tolist() == [by_id[int(k)].category_id for k in b["keys"]]
    places = torch.cat([b["places"] for b in batches])
    assert places[:, 0].isnan().any() and not places[:, 2].isnan().any()  # unlocated images still have their day


def test_the_embedding_cache_keeps_the_places(val_shards: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["model.name=lit-tiny", "model.image_weights=", "data.image_source=raw"])
    embed_folder(cfg, val_shards, tmp_path / "emb", batch_size=32, dtype="float32", device="cpu", workers=0)
    cached = _batches(open_folder(tmp_path / "emb", "emb", "lit embed").urls, cached=True)
    raw = _batches(shard_urls(val_shards), cached=False)
    by_key = {k: p for b in raw for k, p in zip(b["keys"], b["places"])}
    keys = [k for b in cached for k in b["keys"]]
    assert sorted(keys) == sorted(by_key)
    for b in cached:
        want = torch.stack([by_key[k] for k in b["keys"]])
        assert torch.equal(b["places"].nan_to_num(), want.nan_to_num()) and torch.equal(b["places"].isnan(), want.isnan())


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, "JPEG")
    return buf.getvalue()


def test_shards_without_places_give_nan(tmp_path: Path) -> None:
    """Shards written before places (no keys, no json at all) read as unknown places; a bad json is unknown too."""
    path = tmp_path / "old-000000.tar"
    metas: list[Any] = [{"image_id": 1, "category_id": 3}, None, {"image_id": 3, "latitude": 12.5, "longitude": -3.25, "day": 40},
                        {"latitude": 5.0, "day": None}]
    with wds.TarWriter(str(path)) as writer:
        for i, meta in enumerate(metas):
            sample: dict[str, Any] = {"__key__": f"{i + 1:08d}", "jpg": _jpeg(), "txt": "a photo", "cls": 3}
            if meta is not None:
                sample["json"] = meta
            writer.write(sample)
    (batch,) = _batches([str(path)], cached=False)
    assert set(batch) == BATCH_KEYS
    got = batch["places"].tolist()
    assert all(math.isnan(v) for v in got[0] + got[1] + got[3])  # a latitude alone is no place
    assert got[2] == [12.5, -3.25, 40.0]
    for bad in (b"not json", b"\xff\xfe", "[1, 2]", 7, ["latitude"], {"latitude": True, "longitude": 1.0, "day": "x"}):
        assert all(math.isnan(v) for v in sample_place(bad))
    assert sample_place(b'{"latitude": 1.5, "longitude": 2, "day": 3}') == (1.5, 2.0, 3.0)
