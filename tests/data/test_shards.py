"""Shards from the toy dataset: round trip, determinism, resume after a kill, bad images, bad JSON."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds
from PIL import Image

from lit.cli import main as lit_main
from lit.config import CaptionConfig, ShardConfig
from lit.data.captions import caption
from lit.data.inat import DatasetError, load_categories_json, load_split
from lit.data.shard_writer import read_file
from lit.data.shards import build_shards, read_manifest, shard_urls
from tests.data.conftest import TRAIN_PER_CLASS, VAL_PER_CLASS

REPO = Path(__file__).resolve().parents[2]
SHARD_CFG = ShardConfig(samples_per_shard=50, workers=2, seed=3)


@pytest.fixture(scope="module")
def train_shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "train"
    build_shards(toy_root, "train", out, SHARD_CFG, CaptionConfig(recipe="mixed"), progress=False)
    return out


def _samples(folder: Path) -> list[dict[str, Any]]:
    return list(wds.WebDataset(shard_urls(folder), shardshuffle=False, empty_check=False))


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_round_trip(toy_root: Path, train_shards: Path) -> None:
    manifest = read_manifest(train_shards)
    split = load_split(toy_root, "train")
    samples = _samples(train_shards)
    assert manifest["totals"]["samples"] == len(samples) == len(split.images) == 32 * TRAIN_PER_CLASS
    assert [s["samples"] for s in manifest["shards"]] == [50] * 6 + [20]
    assert manifest["num_classes"] == 32 and manifest["skipped"] == [] and manifest["recipe"] == "mixed"
    assert sorted(int(s["__key__"]) for s in samples) == sorted(img.id for img in split.images)
    for s in samples:
        assert {"__key__", "__url__", "jpg", "txt", "cls", "json"} <= set(s)
        meta = json.loads(s["json"])
        cat = split.category_by_id[int(s["cls"])]
        assert meta["category_id"] == cat.id and meta["image_id"] == int(s["__key__"])
        assert meta["species"] == cat.name and meta["class"] == cat.class_ and meta["supercategory"] == cat.supercategory
        assert s["txt"].decode() == caption(cat, meta["recipe"])
        assert s["jpg"] == (toy_root / meta["file_name"]).read_bytes()  # the original bytes
    assert {json.loads(s["json"])["recipe"] for s in samples} == {"paper", "taxonomic", "scientific", "common"}


def test_manifest_hashes_urls_and_categories(toy_root: Path, train_shards: Path) -> None:
    import hashlib

    manifest = read_manifest(train_shards)
    urls = shard_urls(train_shards)
    assert [Path(u).name for u in urls] == [f"train-{i:06d}.tar" for i in range(7)]
    assert all(Path(u).is_absolute() for u in urls)
    for entry, url in zip(manifest["shards"], urls):
        data = Path(url).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    assert manifest["totals"]["bytes"] == sum(s["bytes"] for s in manifest["shards"])
    assert manifest["seed"] == 3 and manifest["samples_per_shard"] == 50
    assert sum(manifest["class_counts"].values()) == manifest["totals"]["samples"]
    assert load_categories_json(train_shards / "categories.json") == list(load_split(toy_root, "train").categories)
    assert not (train_shards / ".progress").exists()


def test_training_shards_mix_classes(train_shards: Path) -> None:
    first = wds.WebDataset(shard_urls(train_shards)[:1], shardshuffle=False)
    assert len({int(s["cls"]) for s in first}) >= 20  # 50 samples of 32 classes, seeded shuffle


def test_same_seed_same_bytes_other_seed_other_order(toy_root: Path, train_shards: Path, tmp_path: Path) -> None:
    build_shards(toy_root, "train", tmp_path / "again", replace_cfg(workers=1), CaptionConfig(recipe="mixed"), progress=False)
    assert _tree(tmp_path / "again") == _tree(train_shards)
    build_shards(toy_root, "train", tmp_path / "seed4", replace_cfg(seed=4), CaptionConfig(recipe="mixed"), progress=False)
    other = _samples(tmp_path / "seed4")
    assert [s["__key__"] for s in other] != [s["__key__"] for s in _samples(train_shards)]


def replace_cfg(**kw: Any) -> ShardConfig:
    from dataclasses import replace

    return replace(SHARD_CFG, **kw)


def test_validation_shards_keep_order_and_bytes_limit(toy_root: Path, tmp_path: Path) -> None:
    cfg = ShardConfig(samples_per_shard=1000, max_bytes=64_000, shuffle=False, workers=1)
    manifest = build_shards(toy_root, "val", tmp_path / "val", cfg, CaptionConfig(), progress=False)
    keys = [int(s["__key__"]) for s in _samples(tmp_path / "val")]
    assert keys == [img.id for img in load_split(toy_root, "val").images]
    assert manifest["totals"]["shards"] > 1 and all(s["bytes"] <= 64_000 for s in manifest["shards"])


def test_resize_short_side(toy_root: Path, tmp_path: Path) -> None:
    cfg = ShardConfig(samples_per_shard=100, workers=1, resize=32)
    build_shards(toy_root, "val", tmp_path / "small", cfg, CaptionConfig(), progress=False)
    sizes = {Image.open(io.BytesIO(s["jpg"])).size for s in _samples(tmp_path / "small")}
    assert sizes == {(32, 32)}


@pytest.fixture()
def damaged_root(toy_root: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the toy val split with one truncated, one garbage, one empty and one missing image."""
    root = tmp_path / "damaged"
    shutil.copytree(toy_root / "val", root / "val")
    shutil.copy(toy_root / "val.json", root / "val.json")
    images = load_split(root, "val").images
    names = {kind: images[i].file_name for kind, i in (("truncated", 3), ("garbage", 10), ("empty", 20), ("missing", 30))}
    path = {k: root / v for k, v in names.items()}
    path["truncated"].write_bytes(path["truncated"].read_bytes()[:-200])
    path["garbage"].write_bytes(b"<html>404 Not Found</html>" * 40)
    path["empty"].write_bytes(b"")
    path["missing"].unlink()
    return root, names


@pytest.mark.parametrize("resize", [0, 40])
def test_bad_images_are_skipped_counted_and_listed(damaged_root: tuple[Path, dict[str, str]], tmp_path: Path,
                                                   resize: int) -> None:
    root, names = damaged_root
    cfg = ShardConfig(samples_per_shard=20, workers=2, resize=resize)
    manifest = build_shards(root, "val", tmp_path / "out", cfg, CaptionConfig(), progress=False)
    reasons = {k["file_name"]: k["reason"] for k in manifest["skipped"]}
    assert set(reasons) == set(names.values())
    assert reasons[names["missing"]].startswith("missing") and reasons[names["empty"]] == "empty file"
    assert reasons[names["truncated"]].startswith("corrupt") and reasons[names["garbage"]].startswith("corrupt")
    total = 32 * VAL_PER_CLASS
    assert manifest["totals"]["skipped"] == 4 and manifest["totals"]["samples"] == total - 4
    assert len(_samples(tmp_path / "out")) == total - 4


def test_bad_json_stops_before_any_shard_is_written(toy_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    doc = json.loads((toy_root / "val.json").read_text())
    doc["categories"][5].pop("supercategory")
    (root / "val.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as err:
        build_shards(root, "val", tmp_path / "out", ShardConfig(), CaptionConfig(), progress=False)
    assert err.value.field == "supercategory" and err.value.record.startswith("categories[5]")
    assert str(root / "val.json") in str(err.value)
    assert not (tmp_path / "out").exists()
    (root / "val.json").write_text('{"images": [], "categories": [}')
    assert lit_main(["shards", str(root), "--split", "val", "--out", str(tmp_path / "out"), "--no-progress"]) == 2  # data error
    assert not (tmp_path / "out").exists()


def test_resume_after_kill_keeps_complete_shards_and_matches_a_clean_build(toy_root: Path, tmp_path: Path) -> None:
    out, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["--split", "train", "--samples-per-shard", "4", "--workers", "1", "--resize", "40", "--seed", "7", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "lit", "shards", str(toy_root), "--out", str(out), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / ".progress").glob("*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed"
    done = sorted(p.stem for p in (out / ".progress").glob("*.json"))
    assert 3 <= len(done) < 32 * TRAIN_PER_CLASS // 4
    before = {name: (out / name).stat().st_ino for name in done}
    # A complete shard damaged after the kill is rewritten too.
    (out / done[-1]).write_bytes((out / done[-1]).read_bytes()[:1000])
    cfg = ShardConfig(samples_per_shard=4, workers=2, resize=40, seed=7)
    manifest = build_shards(toy_root, "train", out, cfg, CaptionConfig(), progress=False)
    assert all((out / name).stat().st_ino == before[name] for name in done[:-1])  # kept, not rewritten
    assert manifest["totals"]["samples"] == 32 * TRAIN_PER_CLASS
    assert not list(out.glob("*.tmp"))
    build_shards(toy_root, "train", clean, cfg, CaptionConfig(), progress=False)
    assert _tree(out) == _tree(clean)


def test_spawned_workers_write_the_same_bytes(toy_root: Path, tmp_path: Path) -> None:
    cfg = ShardConfig(samples_per_shard=30, workers=2)
    build_shards(toy_root, "val", tmp_path / "fork", cfg, CaptionConfig(), progress=False, start_method="fork")
    build_shards(toy_root, "val", tmp_path / "spawn", cfg, CaptionConfig(), progress=False, start_method="spawn")
    assert _tree(tmp_path / "fork") == _tree(tmp_path / "spawn")


def test_cli_flags_override_the_config(toy_root: Path, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("captions:\n  recipe: common\nshards:\n  samples_per_shard: 7\n  seed: 5\n")
    out = tmp_path / "cli"
    code = lit_main(["shards", str(toy_root), "--split", "val", "--out", str(out), "--config", str(job),
                     "--samples-per-shard", "40", "--workers", "1", "--no-shuffle", "--no-progress"])
    manifest = read_manifest(out)
    assert code == 0 and manifest["recipe"] == "common" and manifest["seed"] == 5
    assert manifest["samples_per_shard"] == 40 and manifest["shuffle"] is False
    assert os.path.isfile(out / "categories.json")
    # today's form: the job first, then overrides; the flags above are its older spelling, read with a warning
    new = tmp_path / "new"
    assert lit_main(["shards", str(job), f"data.root={toy_root}", "shards.samples_per_shard=40", "--split", "val", "--out",
                     str(new), "shards.workers=1", "shards.shuffle=false", "--no-progress"]) == 0
    assert [s["sha256"] for s in read_manifest(new)["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_read_manifest_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="run `lit shards"):
        read_manifest(tmp_path)


def test_fast_tar_writer_gives_webdataset_tarwriter_bytes(toy_root: Path) -> None:
    import random
    import tarfile

    from webdataset import TarWriter

    from lit.data.tario import FastTarWriter as _TarWriter
    from lit.data.tario import Headers as _Headers

    files = [p.read_bytes() for p in sorted((toy_root / "val").rglob("*.jpg"))[:20]]
    samples = [{"__key__": f"{i:08d}", "jpg": d, "txt": "A photo of the Pine White", "cls": 2087, "json": {"i": i}}
               for i, d in enumerate(files)]
    raw = [{"__key__": f"{i:03d}" if i % 3 else "k" * (91 + i % 4), "_meta": b"m", "jpg": memoryview(d), "txt": b"x" * i}
           for i, d in enumerate(files)]  # the fast path's edge cases: bytes-like values, names of up to 100 bytes
    written = {}
    for variant, data, kw in (("encoded", samples, {}), ("bytes", raw, {"encoder": False}),
                              ("keep_meta", raw, {"encoder": False, "keep_meta": True})):
        outputs = []
        for cls in (TarWriter, _TarWriter):
            buf = io.BytesIO()
            with cls(buf, user="lit", group="lit", mode=0o444, mtime=0, **kw) as writer:
                sizes = [writer.write(dict(s)) for s in data]
            outputs.append((buf.getvalue(), sizes))
        assert outputs[0] == outputs[1], variant
        written[variant] = outputs[1][0]
    names = tarfile.open(fileobj=io.BytesIO(written["encoded"])).getnames()
    assert names[:4] == ["00000000.cls", "00000000.jpg", "00000000.json", "00000000.txt"]
    assert "001._meta" in tarfile.open(fileobj=io.BytesIO(written["keep_meta"])).getnames()
    buf = io.BytesIO()  # webdataset writes PAX headers for non-ASCII names (it drops its format argument); we write ustar
    with _TarWriter(buf, user="lit", group="lit", mode=0o444, mtime=0, encoder=False) as writer:
        writer.write({"__key__": "é01", "jpg": files[0]})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        assert tar.getnames() == ["é01.jpg"] and tar.extractfile("é01.jpg").read() == files[0]
    headers, rng = _Headers(), random.Random(0)
    for _ in range(500):
        info = tarfile.TarInfo(rng.choice([f"{rng.randrange(10**9):09d}.jpg", "x" * rng.randrange(1, 120), "é.txt"]))
        info.size, info.mtime = rng.choice([0, 511, 512, rng.randrange(10**10), 8**11]), rng.choice([0, 1_700_000_000])
        info.mode, info.uname = rng.choice([0o444, 0o644]), rng.choice(["lit", ""])
        try:
            expected = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        except ValueError:
            continue  # not representable in ustar at all
        assert headers(info) == expected


@pytest.mark.parametrize("planned", [0, 1, 70_000, 100_000, 100_001, 300_000])
def test_read_file_returns_the_whole_file_whatever_its_planned_size(tmp_path: Path, planned: int) -> None:
    data = os.urandom(100_000)  # a file that has grown or shrunk since it was planned reads whole all the same
    (tmp_path / "img.jpg").write_bytes(data)
    assert read_file(str(tmp_path / "img.jpg"), planned) == data
