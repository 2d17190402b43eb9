"""Compute efficiency: achieved FLOP/s of the text-tower training step against this machine's matmul FLOP/s.

The step is lit's own (`lit.train.loop.Trainer.train_step` on cached image embeddings: the
cached path's whole step, AdamW included) with the paper shape's text tower (384 wide, 12
layers, 6 heads, projecting into 768), at the length trimming gives the toy/paper captions
(24 tokens) and at the full 77 that open_clip pads to. Its FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention of forward and backward; the
optimizer's elementwise work counts zero). The machine's peak is the best of five fp32
`torch.mm` of 2048x2048 matrices. Each round measures all of them in turn; ratios are per round.
The step is also split into forward+backward and AdamW: lit's AdamW (`fused=True`, from
lit.train.optim) against torch's default for CPU tensors, the per-tensor loop that
open_clip_train builds (`optim.AdamW` without `fused`), on the same gradients. Last, the frozen
ViT-L-14 forward of a batch of images as lit runs it (eval mode, `no_grad`) and as open_clip_train does
(the whole model in train mode, autograd on: the tower's weights are frozen, so nothing is
recorded, but `nn.MultiheadAttention` skips its fused inference kernel).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import _common as common

REPEATS = 3
BATCH = 32
LENGTHS = (24, 77)
MM_N = 2048
ITERS = 3  # timed calls per figure per round (their median)


def matmul_flops() -> float:
    """FLOP/s of the best of five fp32 torch.mm (MM_N x MM_N)."""
    a, b = torch.randn(MM_N, MM_N), torch.randn(MM_N, MM_N)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * MM_N**3 / best


def _median_time(fn: Callable[[], object], iters: int = ITERS) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_trainer() -> Any:
    """lit's Trainer on the cached path with the paper shape's text tower, fp32, on the CPU."""
    from lit import dist
    from lit.config import config_from_dict
    from lit.train.loop import Trainer

    built = common.build(common.text_config(), "bench-text")
    cfg = config_from_dict({
        "data": {"image_source": "cached", "augment": False, "batch_size": BATCH},
        "model": {"name": "bench-text", "config": common.text_config(), "image_weights": ""},
        "train": {"precision": "fp32", "warmup_steps": 0, "device": "cpu"},
    }, "bench")
    return Trainer(cfg, built, dist.resolve({}), torch.device("cpu"), total_steps=10_000)


def make_batch(length: int) -> dict[str, Any]:
    """Cached image features and full-length token rows (EOT last: argmax pooling takes it)."""
    g = torch.Generator().manual_seed(length)
    tokens = torch.randint(1, 49000, (BATCH, length), generator=g)
    tokens[:, -1] = 49407
    return {"images": torch.randn(BATCH, 768, generator=g), "tokens": tokens, "labels": torch.arange(BATCH)}


def step_flops(trainer: Any, batch: dict[str, Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        trainer.train_step([batch])
    return counter.get_total_flops()


def fwd_bwd(trainer: Any, batch: dict[str, Any]) -> None:
    """The step without the optimizer: forward, loss, backward."""
    trainer.optimizer.zero_grad(set_to_none=True)
    image_f, text_f, scale = trainer.forward_module(batch["images"], trainer.prepare_tokens(batch["tokens"]))
    trainer.loss_fn(image_f, text_f, scale).backward()


def tower_variants() -> dict[str, Callable[[], float]]:
    """Seconds of one frozen ViT-L-14 forward of the `train` benchmark's batch, lit's way and open_clip_train's way."""
    import open_clip

    torch.manual_seed(0)
    tower = open_clip.CustomTextCLIP(**common.paper_shape().config).visual
    for p in tower.parameters():
        p.requires_grad_(False)
    image = torch.randn(common.paper_shape().batch_size, 3, 224, 224)  # at batch 1 the two ways cost the same

    def lit() -> float:
        tower.eval()
        with torch.no_grad():
            return _median_time(lambda: tower(image), 1)

    def openclip() -> float:
        tower.train()
        return _median_time(lambda: tower(image), 1)

    return {"tower lit": lit, "tower open_clip_train": openclip}


def run() -> list[dict[str, Any]]:
    trainer = make_trainer()
    batches = {n: make_batch(n) for n in LENGTHS}
    flops = {n: step_flops(trainer, b) for n, b in batches.items()}
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in trainer.optimizer.param_groups]
    per_tensor = torch.optim.AdamW(groups, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, foreach=False, fused=False)
    fwd_bwd(trainer, batches[LENGTHS[0]])  # gradients for the optimizer timings
    variants: dict[str, Callable[[], float]] = {"matmul": matmul_flops}
    for n, b in batches.items():
        # partial binds this batch (mypy cannot type a lambda's default argument against Callable[[], float])
        variants[f"step {n}"] = functools.partial(lambda b: _median_time(lambda: trainer.train_step([b])), b)
        variants[f"fwd+bwd {n}"] = functools.partial(lambda b: _median_time(lambda: fwd_bwd(trainer, b)), b)
    variants["adamw lit"] = lambda: _median_time(trainer.optimizer.step)
    variants["adamw per-tensor"] = lambda: _median_time(per_tensor.step)
    variants.update(tower_variants())
    for v in variants.values():  # warm-up: allocator, thread pools, optimizer state
        v()
    runs = common.interleaved(variants, REPEATS, max_wait=5.0)
    load = common.external_load()
    peak = runs["matmul"]
    results: list[dict[str, Any]] = [
        {"metric": f"fp32 matmul ({MM_N}x{MM_N}, best of 5)", "unit": "GFLOP/s", "values": [f / 1e9 for f in peak],
         "params": {"batch": BATCH, "lengths": list(LENGTHS), "text_tower": common.PAPER_TEXT,
                    "trainable_params_M": round(sum(p.numel() for p in params) / 1e6, 2),
                    "step_gflop": {str(n): round(f / 1e9, 2) for n, f in flops.items()},
                    "threads": torch.get_num_threads(), "external_load_cores": load}},
    ]
    for n in LENGTHS:
        step, fb = runs[f"step {n}"], runs[f"fwd+bwd {n}"]
        achieved = [flops[n] / t for t in step]
        results += [
            {"metric": f"text step, {n} tokens (lit cached path)", "unit": "GFLOP/s", "values": [a / 1e9 for a in achieved]},
            {"metric": f"text step, {n} tokens / matmul peak", "unit": "ratio", "values": common.ratios(achieved, peak)},
            {"metric": f"text fwd+bwd only, {n} tokens / matmul peak", "unit": "ratio",
             "values": common.ratios([flops[n] / t for t in fb], peak)},
        ]
    step24, ours, loop = runs[f"step {LENGTHS[0]}"], runs["adamw lit"], runs["adamw per-tensor"]
    fused = bool(trainer.optimizer.defaults.get("fused"))
    results += [
        {"metric": f"AdamW share of the {LENGTHS[0]}-token step", "unit": "%", "values": [100 * a / s for a, s in zip(ours, step24)],
         "note": f"lit's AdamW (fused={fused}) as a share of its whole cached-path step"},
        {"metric": "AdamW per-tensor (torch default, open_clip_train) / lit's", "unit": "ratio",
         "values": common.ratios(loop, ours),
         "note": "one AdamW step over the text tower's 41M parameters, same gradients"},
        {"metric": "ViT-L-14 forward: train mode (open_clip_train) / eval + no_grad (lit)", "unit": "ratio",
         "values": common.ratios(runs["tower open_clip_train"], runs["tower lit"]),
         "note": f"a batch of {common.paper_shape().batch_size} 224-px images (the `train` benchmark's) through the "
                 "frozen tower, the way each trainer runs it"},
        {"metric": f"text step time, {LENGTHS[1]} / {LENGTHS[0]} tokens", "unit": "ratio",
         "values": common.ratios(runs[f"step {LENGTHS[1]}"], step24), "note": "what trimming the padding saves per step"},
    ]
    return results
