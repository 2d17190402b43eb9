"""Export a trained checkpoint as a folder open_clip loads directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, cast

import torch

from lit.checkpoint import model_from_checkpoint
from lit.model import LOSS_INIT, model_config_dict, submodule

WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _to_open_clip_layout(state: dict[str, torch.Tensor], hf_text: bool) -> dict[str, torch.Tensor]:
    """We build native text towers as CustomTextCLIP (`text.*`); open_clip's CLIP keeps them top level."""
    if hf_text:
        return state
    return {(k[len("text."):] if k.startswith("text.") else k): v for k, v in state.items()}


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write `out/` with open_clip_config.json and open_clip_pytorch_model.bin (plus HF tokenizer files).

    Load it with `open_clip.create_model_and_transforms("local-dir:OUT")`; for an open_clip
    architecture name, `create_model_and_transforms(NAME, pretrained="OUT/open_clip_pytorch_model.bin")` too.
    A sigmoid model's config carries open_clip's `init_logit_bias` (as open_clip's own SigLIP configs do), so
    open_clip builds the `logit_bias` the weights hold (by NAME: pass `init_logit_bias=-10` as well); the
    trained scale and bias come from the weights.
    """
    cfg, built, _ = model_from_checkpoint(ckpt)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    arch = {k: v for k, v in model_config_dict(cfg.model).items() if k != "preprocess_cfg"}
    arch.update(LOSS_INIT[cfg.train.loss])
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
    # open_clip sets preprocess_cfg on the tower as a plain dict attribute; nn.Module types attributes Tensor | Module.
    preprocess = dict(cast("dict[str, Any]", submodule(built.model, "visual").preprocess_cfg))
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": arch, "preprocess_cfg": preprocess}, indent=2))
    state = _to_open_clip_layout(built.model.state_dict(), hf_text)
    state = {k: v for k, v in state.items() if not k.endswith("attn_mask")}
    torch.save(state, out / WEIGHTS_NAME)
    return out
