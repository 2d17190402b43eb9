"""Train the location prior from a split's annotations: deterministic for a seed, checkpointed, resumable.

Every located training image is one presence observation of its species. Each step takes a
batch of them in a seeded order, hides some dates (`prior.date_dropout`), draws as many random
background places, and minimises the assume-negative loss (`lit.prior.net`). The order, the
background and the hidden dates of step s of epoch e come from (seed, e, s) alone, so a run
stopped anywhere and resumed from its checkpoint takes the same steps as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lit.checkpoint import CheckpointError
from lit.config import Config
from lit.data.inat import Split, load_split
from lit.errors import DataError
from lit.io import append_jsonl, atomic_file, write_json
from lit.log import console, logger
from lit.prior.net import PriorNet, assume_negative_loss, random_places
from lit.prior.store import CHECKPOINT_FILE, PRIOR_FILE, Prior, prior_dir, save_prior

FINGERPRINT_KEYS = ("split", "use_date", "date_dropout", "width", "depth", "epochs", "batch_size", "lr", "lr_decay",
                    "pos_weight", "seed")
"""What the prior's weights depend on (besides the annotations): a change retrains it."""


@dataclass(frozen=True)
class Observations:
    """The located images of a split: places [M, 3] (day NaN where unknown), class index [M], and the species."""

    places: torch.Tensor
    targets: torch.Tensor
    category_ids: list[int]
    names: list[str]
    unplaced: dict[str, int]
    source_sha256: str


def observations(split: Split) -> Observations:
    """The split's located images as training observations; unplaced images are counted by reason."""
    index = {c.id: i for i, c in enumerate(split.categories)}
    located = [img for img in split.images if img.place.located]
    if not located:
        raise DataError(f"{split.annotation_file}: none of its {len(split.images)} images has usable latitude and longitude "
                        "(the prior learns from them); add them or leave the prior out")
    places = torch.tensor(np.array([img.place.row() for img in located], dtype=np.float32))
    targets = torch.tensor([index[img.category_id] for img in located], dtype=torch.long)
    return Observations(places, targets, [c.id for c in split.categories], [c.name for c in split.categories],
                        dict(split.unplaced), split.source_sha256)


def fingerprint(cfg: Config, source_sha256: str) -> str:
    settings = {k: getattr(cfg.prior, k) for k in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps({"annotations": source_sha256, "prior": settings}, sort_keys=True).encode()).hexdigest()


def _step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{seed}/{epoch}/{step}".encode()).digest()[:8], "little") >> 1)


def complete(cfg: Config) -> tuple[bool, str]:
    """Whether the job's prior is trained and matches the job and its annotations (for the pipeline and --dry-run)."""
    path = prior_dir(cfg) / PRIOR_FILE
    if not path.is_file():
        return False, f"{path}: not trained"
    try:
        info = Prior.load(path).info
    except CheckpointError as err:
        return False, str(err)
    annotations = Path(cfg.data.root) / f"{cfg.prior.split}.json"
    try:
        sha = hashlib.sha256(annotations.read_bytes()).hexdigest()
    except OSError:
        sha = info.get("source_sha256", "")  # the data is not here (another node): trust the record
    if info.get("fingerprint") != fingerprint(cfg, sha):
        return False, f"{path}: made from other annotations or prior settings than the job's"
    return True, f"trained on {info.get('observations', 0):,} located images"


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_file(path) as f:
        torch.save(state, f)


def train_prior(cfg: Config, should_stop: Callable[[], bool] = lambda: False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or find complete) the job's prior; returns its summary (`stopped: true` when asked to stop)."""
    out = prior_dir(cfg)
    pc = cfg.prior
    done, detail = complete(cfg)
    if done:
        logger.info("prior: %s (%s), nothing to do", out / PRIOR_FILE, detail)
        return json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {"complete": True}
    obs = observations(load_split(cfg.data.root, pc.split))
    fp = fingerprint(cfg, obs.source_sha256)
    if pc.threads:
        torch.set_num_threads(pc.threads)
    device = torch.device("cuda" if pc.device == "cuda" or (pc.device == "auto" and torch.cuda.is_available()) else "cpu")
    torch.manual_seed(pc.seed)
    net = PriorNet(len(obs.category_ids), pc.width, pc.depth, pc.use_date).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=pc.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=pc.lr_decay)
    m = len(obs.targets)
    steps = math.ceil(m / pc.batch_size)
    epoch, step, seconds = 0, 0, 0.0
    ckpt = out / CHECKPOINT_FILE
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fp:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            epoch, step, seconds = int(state["epoch"]), int(state["step"]), float(state["seconds"])
            logger.info("prior: resuming from %s at epoch %d, step %d", ckpt, epoch, step)
        else:
            logger.warning("prior: %s was made for other annotations or settings; starting over", ckpt)
    places, targets = obs.places, obs.targets
    stopped = False
    start = time.perf_counter() - seconds
    bar = Progress(TextColumn("[bold]prior"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                   disable=not progress)
    net.train()
    with bar:
        task = bar.add_task("prior", total=pc.epochs * steps, completed=epoch * steps + step)
        while epoch < pc.epochs and not stopped:
            order = torch.randperm(m, generator=_step_generator(pc.seed, epoch, -1))
            total, count = 0.0, 0
            while step < steps:
                if should_stop():
                    stopped = True
                    break
                gen = _step_generator(pc.seed, epoch, step)
                idx = order[step * pc.batch_size:(step + 1) * pc.batch_size]
                batch = places[idx].clone()
                if pc.use_date and pc.date_dropout > 0:
                    batch[torch.rand(len(idx), generator=gen) < pc.date_dropout, 2] = math.nan
                background = random_places(len(idx), gen)
                logits = net(torch.cat([batch, background]).to(device))
                loss = assume_negative_loss(logits[: len(idx)], logits[len(idx):], targets[idx].to(device), pc.pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(idx), count + len(idx)
                step += 1
                bar.advance(task)
            if stopped:
                break
            sched.step()
            append_jsonl(out / "metrics.jsonl", {"epoch": epoch + 1, "loss": total / max(1, count),
                                                 "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - start, 2)})
            epoch, step = epoch + 1, 0
            _save_state(ckpt, {"fingerprint": fp, "model": net.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                               "seconds": time.perf_counter() - start})
    if stopped:
        _save_state(ckpt, {"fingerprint": fp, "model": net.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "epoch": epoch, "step": step, "seconds": time.perf_counter() - start})
        logger.info("prior: stopped at epoch %d, step %d; a re-run goes on from %s", epoch, step, ckpt)
        return {"stopped": True, "epoch": epoch, "step": step}
    seconds = round(time.perf_counter() - start, 2)
    skipped = sum(obs.unplaced.values())
    info = {"fingerprint": fp, "source_sha256": obs.source_sha256, "observations": m, "unplaced": obs.unplaced,
            "prior": asdict(pc), "annotations": str(Path(cfg.data.root) / f"{pc.split}.json"), "seconds": seconds}
    save_prior(out / PRIOR_FILE, net, obs.category_ids, obs.names, info)
    ckpt.unlink(missing_ok=True)
    summary = {"prior": str(out / PRIOR_FILE), "observations": m, "skipped": skipped, "unplaced": obs.unplaced,
               "classes": len(obs.category_ids), "epochs": pc.epochs, "steps": pc.epochs * steps, "seconds": seconds}
    write_json(out / "summary.json", summary)
    if skipped:
        logger.warning("prior: skipped %d of %d images without usable coordinates (%s)", skipped, m + skipped,
                       ", ".join(f"{k}: {v}" for k, v in sorted(obs.unplaced.items())))
    logger.info("prior: %d located images of %d species, %d epochs in %.1f s → %s", m, len(obs.category_ids), pc.epochs,
                seconds, out / PRIOR_FILE)
    return summary


__all__ = ["FINGERPRINT_KEYS", "Observations", "complete", "fingerprint", "observations", "train_prior"]
