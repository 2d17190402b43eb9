"""Baselines without training: zero-shot accuracy of a whole pretrained open_clip model, same protocol as ours.

`lit eval JOB.yaml --open-clip SPEC` evaluates the model on the job's validation shards
(raw images through the model's own preprocessing) with the job's classes, captions and templates,
so a report shows what LiT tuning adds over the model it starts from (OpenAI's CLIP ViT-L/14 with
its own text tower) and over the field's reference (BioCLIP). SPEC is local files, never a download:
- `local-dir:DIR`: a folder with open_clip_config.json and open_clip_pytorch_model.bin (or
  .safetensors), as `lit export` writes and as BioCLIP's Hugging Face repository holds
  (`huggingface-cli download imageomics/bioclip --local-dir DIR` on a login node);
- `ARCH:FILE`: an open_clip architecture name and a local checkpoint, e.g.
  `ViT-L-14-quickgelu:/models/vit-l-14-openai.pt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lit import dist
from lit.config import Config
from lit.configlib import ConfigError, to_dict
from lit.model import BuiltModel

KEY = "--open-clip"


def build_open_clip(spec: str, device: torch.device) -> BuiltModel:
    """An open_clip model, its transforms and tokenizer from local files (ConfigError naming the fix otherwise)."""
    import open_clip

    if spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ConfigError("command line", KEY, f"{folder} has no open_clip_config.json: give a folder written by `lit export` "
                              "or downloaded from a Hugging Face open_clip repository (e.g. imageomics/bioclip)")
        name, pretrained = f"local-dir:{folder}", None
    elif ":" in spec:
        name, pretrained = spec.split(":", 1)
        if name not in open_clip.list_models():
            raise ConfigError("command line", KEY, f"{name!r} is not an open_clip architecture (open_clip.list_models())")
        if not Path(pretrained).expanduser().is_file():
            raise ConfigError("command line", KEY, f"{pretrained} is not a file: give a local checkpoint (nothing is downloaded)")
        pretrained = str(Path(pretrained).expanduser())
    else:
        raise ConfigError("command line", KEY, f"{spec!r}: write local-dir:DIR or ARCH:FILE (nothing is downloaded)")
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu",
                                                                                      weights_only=True)
    model.to(device).eval()
    return BuiltModel(model, preprocess_train, preprocess_val, open_clip.get_tokenizer(name), {}, name)


def baseline_config(cfg: Config, data: str | Path | None) -> Config:
    """The job's config evaluating raw validation images (a cache belongs to another tower)."""
    from lit.config import config_from_dict

    tree = to_dict(cfg)
    tree["data"].update(image_source="raw", augment=False, views=1)
    if data is not None:
        tree["data"]["val_shards"] = str(data)
    return config_from_dict(tree, "lit eval --open-clip")


def evaluate_open_clip(cfg: Config, spec: str, out_dir: str | Path, data: str | Path | None = None, device: str = "auto",
                       progress: bool = True) -> dict[str, Any]:
    """Zero-shot results of the pretrained model `spec` on the job's validation set; results.json in `out_dir`."""
    from lit.eval.runner import evaluate_model

    info = dist.resolve()
    dev = dist.pick_device(info, device)
    dist.init(info, dev)
    try:
        built = build_open_clip(spec, dev)
        return evaluate_model(baseline_config(cfg, data), built, info, write_results=True, out_dir=out_dir,
                              checkpoint={"path": spec, "step": None, "baseline": True}, progress=progress)
    finally:
        dist.shutdown()


__all__ = ["baseline_config", "build_open_clip", "evaluate_open_clip"]
