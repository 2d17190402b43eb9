"""Worker of the two-rank test: one gloo rank of `evaluate_model`, started by torch.multiprocessing.spawn."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path


def evaluate_rank(rank: int, world: int, port: int, cfg_yaml: str, weights: str, out: str) -> None:
    # A process started by spawn makes its DataLoader workers by spawn too (each re-imports
    # torch and open_clip); a torchrun or srun task forks them. Do as they do.
    multiprocessing.set_start_method("fork", force=True)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch
    import yaml

    from lit import dist
    from lit.config import config_from_dict
    from lit.eval.runner import evaluate_model
    from lit.model import build_model

    torch.set_num_threads(1)
    cfg = config_from_dict(yaml.safe_load(cfg_yaml), "two-rank test")
    info = dist.resolve()
    dist.init(info, torch.device("cpu"), timeout_min=2)
    try:
        built = build_model(cfg.model)
        built.model.load_state_dict(torch.load(weights, weights_only=True))
        result = evaluate_model(cfg, built, info, subset=0, write_results=True, out_dir=Path(out) / "written")
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.shutdown()
