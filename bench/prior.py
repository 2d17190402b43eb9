"""The location prior at iNat2021's shape: training time for 2.7M locations x 10,000 classes, and its cost per photo.

Training: the paper jobs' prior (width 256, depth 4, batch 2048, 10 epochs, with the date) at 10,000
classes, timed over a few steps on random places (the step's cost does not depend on where the
places are) and projected to one epoch over iNat2021's 2,686,843 training images (all located, an
upper bound: a few have no coordinates) and to `prior.epochs` epochs. Its FLOP count (from
torch's counter) against this machine's fp32 matmul peak, measured in the same run, says how close
the step is to what the cores can do.

Prediction: what the prior adds to one photo's answer at 10,000 classes on one core: the network's
forward at one place and the weighing (`lit.prior.combine.weigh`), against the goal of 1 ms.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lit.config import PriorConfig
from lit.prior.combine import located, weigh
from lit.prior.net import PriorNet, assume_negative_loss, random_places

CLASSES = 10_000
INAT_TRAIN = 2_686_843
STEPS = 6
PREDICT_REPEATS = 300
PAPER = PriorConfig(batch_size=2048, epochs=10)
"""The paper jobs' prior (jobs/inat21-*.yaml: SINR's batch and epochs); width and depth are the defaults."""


def _matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(repeats):
        tick = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tick)
    return 2 * n**3 / best


def _training(cfg: PriorConfig) -> tuple[float, float]:
    """(seconds per step, FLOPs per step) of the default prior at 10,000 classes."""
    torch.manual_seed(0)
    net = PriorNet(CLASSES, cfg.width, cfg.depth, cfg.use_date)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, CLASSES, (cfg.batch_size,), generator=gen)

    def step() -> None:
        places = torch.cat([random_places(cfg.batch_size, gen), random_places(cfg.batch_size, gen)])
        logits = net(places)
        loss = assume_negative_loss(logits[: cfg.batch_size], logits[cfg.batch_size:], targets, cfg.pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    tick = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - tick) / STEPS, float(counter.get_total_flops())


def _per_photo(cfg: PriorConfig) -> tuple[float, float]:
    """(ms the prior adds to one photo at 10,000 classes on one core, ms of the image-only softmax for comparison)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = PriorNet(CLASSES, cfg.width, cfg.depth, cfg.use_date).eval()
        logits = torch.randn(1, CLASSES)
        place = torch.tensor([[51.5, -0.12, 160.0]])
        with torch.no_grad():
            for _ in range(20):
                weigh(torch.log_softmax(logits, 1), net.log_presence(place), located(place), 1.0)
            tick = time.perf_counter()
            for _ in range(PREDICT_REPEATS):
                log_probs = torch.log_softmax(logits, 1)
            alone = (time.perf_counter() - tick) / PREDICT_REPEATS
            tick = time.perf_counter()
            for _ in range(PREDICT_REPEATS):
                log_probs = torch.log_softmax(logits, 1)
                weigh(log_probs, net.log_presence(place), located(place), 1.0)
            both = (time.perf_counter() - tick) / PREDICT_REPEATS
    finally:
        torch.set_num_threads(threads)
    return 1000 * (both - alone), 1000 * alone


def run() -> list[dict[str, Any]]:
    cfg = PAPER
    peak = _matmul_peak()
    step_s, flops = _training(cfg)
    steps_per_epoch = math.ceil(INAT_TRAIN / cfg.batch_size)
    epoch_h = step_s * steps_per_epoch / 3600
    added_ms, alone_ms = _per_photo(cfg)
    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = [
        {"metric": f"prior training step, {CLASSES:,} classes, batch {cfg.batch_size} (+ as many background places), "
                   f"{threads} threads", "unit": "s", "values": [step_s],
         "params": {"classes": CLASSES, "width": cfg.width, "depth": cfg.depth, "batch_size": cfg.batch_size,
                    "use_date": cfg.use_date, "steps_timed": STEPS, "threads": threads}},
        {"metric": "prior training step, achieved FLOP/s / this machine's fp32 matmul peak (same run)", "unit": "ratio",
         "values": [flops / step_s / peak], "note": f"{flops / 1e9:,.1f} GFLOP a step (torch's counter); matmul peak "
         f"{peak / 1e9:,.0f} GFLOP/s (2048^3, best of 5)"},
        {"metric": f"prior training at iNat2021 scale: one epoch over {INAT_TRAIN:,} located images (projected)",
         "unit": "h", "values": [epoch_h], "note": f"{steps_per_epoch:,} steps x the measured step; prior.epochs "
         f"({cfg.epochs}) epochs: {epoch_h * cfg.epochs:,.1f} h on this CPU"},
        {"metric": f"prior at predict time, {CLASSES:,} classes, one core: 1 ms / the time it adds per photo", "unit": "ratio",
         "values": [1.0 / added_ms], "goal": 1.0,
         "note": f"adds {added_ms:.3f} ms per photo (network at one place + weighing); the image-only softmax takes "
                 f"{alone_ms:.3f} ms"},
    ]
    rows.append({"section": "Location prior at iNat2021's shape", "markdown": (
        f"The paper jobs' prior (jobs/inat21-*: width {cfg.width}, depth {cfg.depth}, batch {cfg.batch_size} with as many "
        f"random background places, day of year on) at {CLASSES:,} classes. A training step takes {step_s:.2f} s on "
        f"{threads} threads ({flops / 1e9:,.0f} GFLOP, {100 * flops / step_s / peak:.0f}% of the matmul peak measured in the "
        f"same run); one epoch over iNat2021's {INAT_TRAIN:,} training images is {steps_per_epoch:,} steps, "
        f"**{epoch_h:.1f} h** here, and its {cfg.epochs} epochs **{epoch_h * cfg.epochs:.1f} h** on this CPU "
        "(the step is a few matmuls: on a GPU node it is minutes; `pipeline.prior` gives the stage its own resources). "
        f"At predict time the prior adds **{added_ms:.2f} ms** per photo on one core (goal: under 1 ms): its network at "
        f"the photo's place and the weighing of {CLASSES:,} probabilities. Measured on this machine; another CPU's "
        "figures scale with its matmul peak (the ratio row).")})
    return rows
