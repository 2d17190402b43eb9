"""`python -m bench._lit_fused ARGS...`: `lit ARGS...` with AdamW built `fused=True` (a proposed fix, measured).

lit builds `torch.optim.AdamW` with torch's defaults, which on CPU tensors is the per-tensor
loop; the `compute` benchmark times it at several times the fused kernel on the same grads.
This runs the unchanged CLI with only that one argument added, so the bench can show what
the change would move before it lands in lit/train/optim.py.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

import lit.train.loop
from lit.cli import main
from lit.train import optim


def make_fused_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.AdamW:
    groups = optim.param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=True)


if __name__ == "__main__":
    lit.train.loop.make_optimizer = make_fused_optimizer  # the name the Trainer calls
    sys.exit(main(sys.argv[1:]))
