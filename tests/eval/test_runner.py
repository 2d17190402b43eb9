"""evaluate_model end to end on toy shards with the tiny model: outputs, subsets, caches, errors, two ranks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as tmp

from launcher.submit import free_port
from lit.config import Config, dump_config
from lit.configlib import ConfigError
from lit.data.inat import RANKS
from lit.dist import DistInfo
from lit.eval.runner import evaluate_model
from lit.model import BuiltModel

ONE = DistInfo(rank=0, world_size=1, local_rank=0, source="single")


def monotone(per_rank: dict[str, float]) -> bool:
    values = [per_rank[r] for r in RANKS]
    return all(a >= b for a, b in zip(values, values[1:]))


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what legitimately differs between runs (time, world size)."""
    out = {k: v for k, v in result.items() if k not in ("seconds", "setup")}
    return json.loads(json.dumps(out))


def test_evaluate_writes_results_and_plot(tiny: BuiltModel, toy_val: Path, tmp_path: Path,
                                          config_for: Callable[..., Config]) -> None:
    cfg = config_for(tmp_path / "run", toy_val)
    result = evaluate_model(cfg, tiny, ONE, write_results=True)
    assert result["num_samples"] == 128 and result["num_classes"] == 32 and result["bad_samples"] == 0
    assert set(result["per_rank"]) == set(RANKS) and monotone(result["per_rank"])
    assert result["per_rank"]["species"] == result["top1"] <= result["top5"]
    assert len(result["hardest"]) == 5 and result["templates"] == ["paper"]
    assert result["checkpoint"] == {"path": None, "step": None}
    assert [r["backbone"] for r in result["paper_table"]][:2] == ["ViT", "ResNet50"]
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written == json.loads(json.dumps(result))
    png = tmp_path / "run" / "plots" / "accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # numbers training logs into metrics.jsonl: no clash with the record's own `step`/`type` keys
    numeric = {k for k, v in result.items() if isinstance(v, (int, float))}
    assert numeric == {"top1", "top5", "mean_per_class", "num_samples", "num_classes", "classes_evaluated",
                       "bad_samples", "seconds"}


def test_subset_and_no_files_without_write(tiny: BuiltModel, toy_val: Path, tmp_path: Path,
                                           config_for: Callable[..., Config]) -> None:
    cfg = config_for(tmp_path / "run", toy_val, eval={"templates": ["simple"]})
    result = evaluate_model(cfg, tiny, ONE, subset=40, write_results=False)
    # A fixed subset chosen by key hash: about the size asked for (a binomial draw), and the same every time.
    assert 20 <= result["num_samples"] <= 60
    assert evaluate_model(cfg, tiny, ONE, subset=40, write_results=False)["num_samples"] == result["num_samples"]
    assert not (tmp_path / "run" / "results.json").exists()
    assert tiny.model.training is False


def _fake_cache(toy_val: Path, out: Path, fingerprint: str) -> Path:
    out.mkdir()
    manifest = json.loads((toy_val / "manifest.json").read_text())
    for s in manifest["shards"]:
        (out / s["name"]).symlink_to(toy_val / s["name"])
    shutil.copy(toy_val / "categories.json", out / "categories.json")
    manifest = {"kind": "embeddings", "fingerprint": fingerprint, "shards": manifest["shards"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_cache_of_another_tower_is_refused(tiny: BuiltModel, toy_val: Path, tmp_path: Path,
                                           config_for: Callable[..., Config]) -> None:
    cache = _fake_cache(toy_val, tmp_path / "emb", "0" * 64)
    cfg = config_for(tmp_path / "run", toy_val, data={"image_source": "cached", "val_embeddings": str(cache), "augment": False})
    with pytest.raises(ConfigError, match="data.val_embeddings.*rerun `lit embed"):
        evaluate_model(cfg, tiny, ONE)


def test_cached_equals_raw(tiny: BuiltModel, toy_val: Path, tmp_path: Path, config_for: Callable[..., Config]) -> None:
    from lit.data.embed import embed_folder

    cfg = config_for(tmp_path / "run", toy_val)
    embed_folder(cfg, toy_val, tmp_path / "emb", batch_size=32, dtype="float32", device="cpu")
    cached_cfg = config_for(tmp_path / "run", toy_val,
                            data={"image_source": "cached", "val_embeddings": str(tmp_path / "emb"), "augment": False})
    raw = evaluate_model(cfg, tiny, ONE)
    cached = evaluate_model(cached_cfg, tiny, ONE)
    assert comparable(raw) == comparable(cached)


def test_labels_missing_from_categories(tiny: BuiltModel, toy_val: Path, tmp_path: Path,
                                        config_for: Callable[..., Config]) -> None:
    folder = tmp_path / "val"
    shutil.copytree(toy_val, folder)
    cats = json.loads((folder / "categories.json").read_text())
    (folder / "categories.json").write_text(json.dumps(cats[1:]))
    with pytest.raises(ConfigError, match=r"labels missing from its categories.json \(e.g. \[2\]"):
        evaluate_model(config_for(tmp_path / "run", folder), tiny, ONE)
    (folder / "categories.json").unlink()
    with pytest.raises(ConfigError, match="no categories.json"):
        evaluate_model(config_for(tmp_path / "run", folder), tiny, ONE)


def test_two_ranks_equal_one(tiny: BuiltModel, toy_val: Path, tmp_path: Path, config_for: Callable[..., Config]) -> None:
    from _two_rank import evaluate_rank

    cfg = config_for(tmp_path / "run", toy_val, data={"workers": 2}, eval={"templates": ["paper", "simple"], "batch_size": 8})
    one = evaluate_model(cfg, tiny, ONE)
    weights = tmp_path / "weights.pt"
    torch.save(tiny.model.state_dict(), weights)
    tmp.spawn(evaluate_rank, args=(2, free_port(), dump_config(cfg), str(weights), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0]["setup"]["world_size"] == 2
    assert comparable(results[0]) == comparable(results[1]) == comparable(one)
    assert comparable(json.loads((tmp_path / "written" / "results.json").read_text())) == comparable(one)
