"""A small LiT trainer: one optimizer step per `train_step`, and `state_dict`/`load_state_dict` for exact resume."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from open_clip import ClipLoss
from open_clip.loss import SigLipLoss
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lit import dist
from lit.config import Config, TrainConfig
from lit.model import (
    BuiltModel,
    causal_mask_for,
    clip_api,
    image_tower_locked,
    logit_params,
    pad_id,
    submodule,
    trim_supported,
    trim_tokens,
)
from lit.train.divergence import DivergenceWatch
from lit.train.optim import lr_at, make_optimizer, set_lr

LOGIT_SCALE_MAX = math.log(100.0)
AMP_DTYPES = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


class LiTForward(nn.Module):
    """The loss's arguments from raw images or from cached image-tower outputs: image features, text features,
    exp(logit scale), and with `with_bias` (the sigmoid loss) the logit bias.

    Wrapping both paths in one module lets DistributedDataParallel see every forward, the bias included.
    """

    def __init__(self, model: nn.Module, cached: bool, with_bias: bool = False) -> None:
        super().__init__()
        self.model, self.cached, self.with_bias = model, cached, with_bias
        self.frozen_tower = image_tower_locked(model)
        if with_bias and clip_api(model).logit_bias is None:
            raise ValueError("the sigmoid loss needs a model with a logit bias: build it with build_model(..., loss='siglip')")

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.cached:
            image_features = F.normalize(images.float(), dim=-1)
        else:
            with torch.no_grad() if self.frozen_tower else contextlib.nullcontext():
                image_features = clip_api(self.model).encode_image(images, normalize=True)
        with causal_mask_for(self.model, tokens.shape[1]):
            text_features = clip_api(self.model).encode_text(tokens, normalize=True)
        scale = clip_api(self.model).logit_scale.exp()
        bias = clip_api(self.model).logit_bias
        if self.with_bias and bias is not None:
            return image_features, text_features, scale, bias
        return image_features, text_features, scale


def make_loss(cfg: TrainConfig, info: dist.DistInfo) -> nn.Module:
    """open_clip's loss of `train.loss` for this rank; it takes LiTForward's outputs.

    `siglip` is open_clip's SigLipLoss with its default exchange of text features between neighbouring
    ranks (`bidir`): each rank's loss covers its own images against every rank's texts, divided by its
    local batch, so the mean over ranks (what DDP's averaged gradients follow) is the one-rank loss of the
    global batch. local_loss and gather_with_grad are ClipLoss's and do not apply to it.
    """
    if cfg.loss == "siglip":
        return SigLipLoss(rank=info.rank, world_size=info.world_size)
    return ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad, cache_labels=True,
                    rank=info.rank, world_size=info.world_size)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form `torch.load(weights_only=True)` accepts."""
    # The legacy tuple of the global MT19937 (legacy=True is the default; numpy's stub types that call as the dict form).
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Owns the model wrapper, optimizer, scaler and loss; knows nothing about data files or signals."""

    def __init__(self, cfg: Config, built: BuiltModel, info: dist.DistInfo, device: torch.device, total_steps: int,
                 steps_per_epoch: int = 0) -> None:
        self.cfg, self.built, self.info, self.device = cfg, built, info, device
        self.total_steps = total_steps
        self.watch = DivergenceWatch(cfg.train.warmup_steps, steps_per_epoch or total_steps, cfg.train.diverge_on_stall)
        self.model = built.model
        self.cached = cfg.data.image_source == "cached"
        self.sigmoid = cfg.train.loss == "siglip"
        self.forward_module: nn.Module = LiTForward(self.model, self.cached, with_bias=self.sigmoid)
        if info.distributed:
            self.forward_module = DistributedDataParallel(
                self.forward_module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
            )
        self.optimizer = make_optimizer(self.model, cfg.train)
        self.amp_dtype = AMP_DTYPES.get(cfg.train.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "amp_fp16")
        self.loss_fn = make_loss(cfg.train, info)
        self.trim = trim_supported(self.model)
        self.pad = pad_id(self.model)
        self.step = 0
        self.samples_seen = 0

    def train_mode(self) -> None:
        self.model.train()
        if image_tower_locked(self.model):
            submodule(self.model, "visual").eval()  # a frozen tower also keeps dropout and batch-norm statistics fixed

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return trim_tokens(tokens, self.pad) if self.trim else tokens

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over `accum_steps` micro-batches; returns the logged scalars."""
        lr = lr_at(self.step, self.total_steps, self.cfg.train)
        set_lr(self.optimizer, lr)
        self.train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        n = len(micro_batches)
        for i, batch in enumerate(micro_batches):
            images = batch["images"].to(self.device, non_blocking=True)
            tokens = self.prepare_tokens(batch["tokens"]).to(self.device, non_blocking=True)
            sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if i < n - 1 and isinstance(self.forward_module, DistributedDataParallel):
                sync = self.forward_module.no_sync()
            with sync:
                with self._autocast():
                    loss = self.loss_fn(*self.forward_module(images, tokens)) / n
                self.scaler.scale(loss).backward()
            total_loss += float(loss.detach())
        grad_norm = float("nan")
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.cfg.train.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            clip_api(self.model).logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        self.step += 1
        self.samples_seen += sum(len(b["labels"]) for b in micro_batches) * self.info.world_size
        if self.sigmoid and self.info.distributed:  # each rank's sigmoid loss is its share: log their mean, the global loss
            total_loss = float(dist.all_reduce_sum(torch.tensor([total_loss], device=self.device))[0]) / self.info.world_size
        logit_scale, logit_bias = logit_params(self.model)
        out = {"loss": total_loss, "lr": lr, "logit_scale": logit_scale, "grad_norm": grad_norm}
        return {**out, "logit_bias": logit_bias} if self.sigmoid else out

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Model tensors minus the frozen image tower (identified by fingerprint instead)."""
        skip_visual = image_tower_locked(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if not (skip_visual and k.startswith("visual."))}

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "total_steps": self.total_steps,
            "model": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "divergence": self.watch.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing, unexpected = self.model.load_state_dict(state["model"], strict=False)
        wrong = [k for k in missing if not k.startswith("visual.")] + list(unexpected)
        if wrong or (missing and not image_tower_locked(self.model)):
            raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {list(unexpected)[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.watch.load_state_dict(state.get("divergence", {}))  # checkpoints of earlier versions have none
