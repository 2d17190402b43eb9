"""The one distributed layer of lit (data, training and evaluation): the resolver and a few collectives.

The resolver reads SLURM variables, then torchrun's, then falls back to a single process.

A half-set environment is an error that lists what is missing, never a silent fallback
to one process (which would train N independent copies on a cluster).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistEnvError(RuntimeError):
    """The process environment describes a distributed job only partly."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    source: str  # "slurm", "torchrun" or "single"
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _missing(env: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not env.get(n)]


def resolve(env: Mapping[str, str] | None = None) -> DistInfo:
    """Read rank/world/rendezvous from SLURM, else torchrun, else a single process."""
    env = os.environ if env is None else env
    if env.get("SLURM_PROCID"):
        missing = _missing(env, SLURM_VARS)
        world = int(env.get("SLURM_NTASKS") or 1)
        if world > 1:
            missing += _missing(env, ("MASTER_ADDR", "MASTER_PORT"))
        if missing:
            raise DistEnvError(
                f"SLURM task environment is incomplete: missing {', '.join(missing)}. "
                "Launch each task with srun (the launcher sets MASTER_ADDR/MASTER_PORT from the allocation), "
                "or unset SLURM_PROCID to run a single process."
            )
        return DistInfo(
            rank=int(env["SLURM_PROCID"]),
            world_size=world,
            local_rank=int(env["SLURM_LOCALID"]),
            source="slurm",
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
        )
    present = [n for n in TORCHRUN_VARS if env.get(n)]
    if present:
        missing = _missing(env, TORCHRUN_VARS)
        if missing:
            raise DistEnvError(
                f"torchrun environment is incomplete: {', '.join(present)} set but {', '.join(missing)} missing. "
                "Start with torchrun, or unset these variables to run a single process."
            )
        return DistInfo(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env["LOCAL_RANK"]),
            source="torchrun",
            master_addr=env["MASTER_ADDR"],
            master_port=int(env["MASTER_PORT"]),
        )
    return DistInfo(rank=0, world_size=1, local_rank=0, source="single")


def pick_device(info: DistInfo, requested: str = "auto") -> torch.device:
    """The rank's local GPU when there is one (or when asked), else the CPU."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA GPU is visible: check `lit doctor` and the job's GPU request")
    index = info.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def share_cpu_threads(info: DistInfo, env: Mapping[str, str] | None = None) -> int:
    """Give each CPU rank its share of the cores (torchrun does the same with OMP_NUM_THREADS=1).

    Without it every rank starts one thread per core and they fight over the same cores.
    """
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    per_node = env.get("LOCAL_WORLD_SIZE") or (env.get("SLURM_NTASKS_PER_NODE") or "").split("(")[0] or str(info.world_size)
    threads = max(1, (os.cpu_count() or 1) // max(1, int(per_node)))
    torch.set_num_threads(threads)
    return threads


def init(info: DistInfo, device: torch.device, timeout_min: int = 30) -> None:
    """Join the process group: NCCL on GPUs, gloo on CPU. A no-op for one process."""
    if not info.distributed or tdist.is_initialized():
        return
    if device.type == "cpu":
        share_cpu_threads(info)
    backend = "nccl" if device.type == "cuda" else "gloo"
    tdist.init_process_group(
        backend=backend,
        init_method=f"tcp://{info.master_addr}:{info.master_port}",
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(minutes=timeout_min),
    )


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity for one process)."""
    if tdist.is_initialized():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag is set on any rank: the step boundary all ranks agree on."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(t).item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s picklable object on every rank (the object itself for one process)."""
    if not tdist.is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable object, in rank order, on every rank."""
    if not tdist.is_initialized():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()
