"""Checks of the model `lit models prepare` builds from the staged files: generated images, tensor names and shapes,
the text tower's weights, and the ConfigErrors that name the key to fix."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit.config import Config
from lit.configlib import ConfigError
from lit.models.fetch import first_line
from lit.models.plans import ImagePlan
from lit.models.timm_tower import vision_hint
from lit.models.verify import PREPARE, config_key

if TYPE_CHECKING:
    import torch
    from torch import nn



# ---------------------------------------------------------------- checks of the built model


def shape_diffs(job_sd: dict[str, torch.Tensor], ref_sd: dict[str, torch.Tensor]) -> list[str]:
    diffs = [f"{k}: job {tuple(job_sd[k].shape)} vs checkpoint {tuple(ref_sd[k].shape)}"
             for k in job_sd if k in ref_sd and tuple(job_sd[k].shape) != tuple(ref_sd[k].shape)]
    diffs += [f"{k}: only in the job's tower" for k in job_sd if k not in ref_sd]
    diffs += [f"{k}: only in the checkpoint" for k in ref_sd if k not in job_sd]
    return diffs


def vision_error(cfg: Config, job: str, plan: ImagePlan, diffs: list[str], reason: str) -> ConfigError:
    import json

    import open_clip

    if plan.kind == "timm":
        hint = vision_hint(plan)
    else:
        hint = f"open_clip's {plan.name} has vision_cfg {json.dumps((open_clip.get_model_config(plan.name) or {}).get('vision_cfg', {}))}"
    more = f"; … ({len(diffs) - 5} more)" if len(diffs) > 5 else ""
    return ConfigError(job, config_key(cfg, "vision_cfg"), f"the job's image tower does not fit {plan.label} ({reason}): "
                       f"{'; '.join(diffs[:5])}{more}. {hint}")


def text_problems(model: nn.Module, folder: Path) -> list[str]:
    """Tensors of the built text tower that do not hold the folder's weights (transformers would init them randomly)."""
    import torch

    transformer = getattr(getattr(model, "text", None), "transformer", None)
    if transformer is None:
        return []
    state: dict[str, torch.Tensor] = {}
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        from safetensors.torch import load_file

        for f in weights:
            state.update(load_file(str(f)))
    else:
        for f in sorted(folder.glob("pytorch_model*.bin")):
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    prefix = str(getattr(transformer, "base_model_prefix", "") or "")
    if prefix:
        state = {k[len(prefix) + 1:] if k.startswith(prefix + ".") else k: v for k, v in state.items()}
    problems = []
    for k, v in transformer.state_dict().items():
        if k not in state:
            problems.append(f"{k} (not in the checkpoint: randomly initialized)")
        elif tuple(state[k].shape) != tuple(v.shape):
            problems.append(f"{k} (checkpoint {tuple(state[k].shape)}, tower {tuple(v.shape)})")
        elif not torch.equal(state[k].to(v.dtype), v):
            problems.append(f"{k} (differs from the checkpoint)")
    return problems


def build(cfg: Config, job: str, model_section: Any, plan: ImagePlan | None, ref_sd: dict[str, torch.Tensor],
          build_model: Callable[..., Any]) -> Any:
    """build_model with the staged files; a failure becomes a ConfigError that names the key to fix."""
    try:
        return build_model(model_section, "cpu", seed=cfg.train.seed)
    except ConfigError as err:
        raise ConfigError(job, err.key, err.detail) from err
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as err:
        if plan is None:
            raise ConfigError(job, "model.config", f"the job's model cannot be built: {type(err).__name__}: {first_line(err)}") from err
        try:
            bare = build_model(dataclasses.replace(model_section, image_weights=""), "cpu", seed=cfg.train.seed)
        except Exception:
            raise ConfigError(job, "model.config", f"the job's model cannot be built: {type(err).__name__}: {first_line(err)}") from err
        from lit.model import submodule

        diffs = shape_diffs(submodule(bare.model, "visual").state_dict(), ref_sd)
        raise vision_error(cfg, job, plan, diffs or [first_line(err)], "loading failed") from err


def preprocess_message(plan: ImagePlan, x_job: torch.Tensor, x_ref: torch.Tensor) -> str:
    want = {k: plan.pretrained_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in plan.pretrained_cfg}
    got = f"tensors {tuple(x_job.shape)} vs {tuple(x_ref.shape)}" if x_job.shape != x_ref.shape else \
        f"pixels differ by up to {float((x_job - x_ref).abs().max()):.3g}"
    return (f"the job preprocesses images differently from {plan.label} ({got}): set preprocess_cfg to open_clip's "
            f"pretrained cfg: {want} (and vision_cfg.image_size to the tag's)")


def feature_error(cfg: Config, job: str, plan: ImagePlan, staged_cfg: dict[str, Any], diff: float, tolerance: float,
                  cosine: float) -> ConfigError:
    import open_clip

    measured = f"max |difference| {diff:.3g} > {tolerance:.1e}, cosine similarity down to {cosine:.6f}"
    job_qg = bool(staged_cfg.get("quick_gelu", False))
    if plan.kind == "timm":  # timm towers ignore quick_gelu: what is left is the pooling
        return ConfigError(job, config_key(cfg, "vision_cfg"), f"the job's image tower computes other features than timm's own "
                           f"pretrained {plan.label} although every tensor loaded ({measured}): use the model's own pooling "
                           f"(vision_cfg.timm_pool; timm.create_model({plan.name!r}).default_cfg), then run {PREPARE} {job} again")
    if job_qg != plan.quick_gelu:
        act = {True: "QuickGELU", False: "GELU"}
        if cfg.model.config is not None:
            key = "model.config.quick_gelu"
            fix = f"add `quick_gelu: {str(plan.quick_gelu).lower()}` to the inline model config (model.config) of {job}"
        else:
            alt = f"{cfg.model.name}-quickgelu" if plan.quick_gelu else cfg.model.name.removesuffix("-quickgelu")
            key = "model.name"
            fix = (f"set model.name: {alt}" if open_clip.get_model_config(alt) else
                   f"give an inline model.config with quick_gelu: {str(plan.quick_gelu).lower()}") + f" in {job}"
        return ConfigError(job, key, f"the job builds the image tower with {act[job_qg]}, but {plan.label} was trained with "
                           f"{act[plan.quick_gelu]} (open_clip's pretrained cfg says quick_gelu: {plan.quick_gelu}), so its "
                           f"frozen features differ from open_clip's own model ({measured}). Fix: {fix}, then run "
                           f"{PREPARE} {job} again")
    return ConfigError(job, config_key(cfg, "vision_cfg"), f"the job's image tower computes other features than {plan.label} "
                       f"although every tensor loaded ({measured}): compare the model config with open_clip's "
                       f"{plan.name} config (open_clip.get_model_config({plan.name!r}))")
