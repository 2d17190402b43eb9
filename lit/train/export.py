"""Rebuild a trained model from a checkpoint, and export it as a folder open_clip loads directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from lit.config import Config, config_from_dict
from lit.configlib import ConfigError
from lit.model import BuiltModel, build_model, fingerprint, model_config_dict
from lit.train import checkpoint

WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory / checkpoints folder (its newest checkpoint)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path, path.parent):
        found = checkpoint.list_checkpoints(folder)
        if found:
            return found[-1]
    raise ConfigError("", "checkpoint", f"{path} is neither a checkpoint file nor a run directory with checkpoints")


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Config, BuiltModel, dict[str, Any]]:
    """The checkpoint's config, its model with trained weights (frozen tower verified), and the raw state."""
    path = resolve_checkpoint(path)
    state = checkpoint.load(path)
    cfg = config_from_dict(yaml.safe_load(state["config"]), f"{path} (saved config)")
    built = build_model(cfg.model, "cpu", seed=cfg.train.seed)
    if fingerprint(built.model, built.preprocess_val) != state["tower_fingerprint"]:
        raise ConfigError(
            str(path), "model",
            "the frozen image tower built from the saved config differs from the one this run trained with: "
            "the local weight files changed since (model.image_weights / model.pretrained)",
        )
    missing, unexpected = built.model.load_state_dict(state["model"], strict=False)
    if unexpected or any(not k.startswith("visual.") for k in missing):
        raise ConfigError(str(path), "model", f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    built.model.to(device).eval()
    return cfg, built, state


def _to_open_clip_layout(state: dict[str, torch.Tensor], hf_text: bool) -> dict[str, torch.Tensor]:
    """We build native text towers as CustomTextCLIP (`text.*`); open_clip's CLIP keeps them top level."""
    if hf_text:
        return state
    return {(k[len("text."):] if k.startswith("text.") else k): v for k, v in state.items()}


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write `out/` with open_clip_config.json and open_clip_pytorch_model.bin (plus HF tokenizer files).

    Load it with `open_clip.create_model_and_transforms("local-dir:OUT")`; for an open_clip
    architecture name, `create_model_and_transforms(NAME, pretrained="OUT/open_clip_pytorch_model.bin")` too.
    """
    cfg, built, _ = model_from_checkpoint(ckpt)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    arch = {k: v for k, v in model_config_dict(cfg.model).items() if k != "preprocess_cfg"}
    text_cfg = dict(arch["text_cfg"])
    hf_text = bool(text_cfg.get("hf_model_name"))
    if hf_text:
        source = Path(text_cfg["hf_model_name"])
        for name in HF_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, out / name)
        text_cfg["hf_model_name"] = str(out)
        text_cfg["hf_tokenizer_name"] = str(out)
        arch["text_cfg"] = text_cfg
    preprocess = dict(built.model.visual.preprocess_cfg)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": arch, "preprocess_cfg": preprocess}, indent=2))
    state = _to_open_clip_layout(built.model.state_dict(), hf_text)
    state = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
    torch.save(state, out / WEIGHTS_NAME)
    return out
