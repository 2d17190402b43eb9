"""Where a job runs: the SLURM allocation, the pipeline's stage jobs and the container (sections of `lit.config.Config`).

Plain typed data like the rest of the config tree; `launcher` turns it into submitit executors.
Each field carries its documentation as the string literal below it (read by `lit.configdoc`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lit.configlib import check as _check

# sbatch options the launcher sets itself → the config key to use instead (slurm.extra must not repeat them)
MANAGED_SBATCH = {
    "nodes": "slurm.nodes", "ntasks-per-node": "slurm.tasks_per_node", "gpus-per-node": "slurm.gpus_per_node",
    "cpus-per-task": "slurm.cpus_per_task", "mem": "slurm.mem_gb", "time": "slurm.time_min",
    "signal": "slurm.signal_delay_s", "partition": "slurm.partition", "account": "slurm.account",
    "qos": "slurm.qos", "constraint": "slurm.constraint", "exclusive": "slurm.exclusive", "job-name": "name", "array": "slurm.array_parallelism (python -m launcher sweep)",
    "output": "run_dir (logs go to RUN_DIR/slurm)", "error": "run_dir (logs go to RUN_DIR/slurm)",
}


@dataclass(frozen=True)
class SlurmConfig:
    """Resources asked of SLURM (cluster: slurm) or of the local executor."""

    nodes: int = 1
    """Nodes of the allocation."""
    gpus_per_node: int = 0
    """GPUs per node (0 for CPU jobs)."""
    tasks_per_node: int = 0
    """Processes per node, each on one GPU of a GPU job; 0: one per GPU (1 on CPU jobs)."""
    cpus_per_task: int = 2
    """CPU cores per process (data loading workers run on these)."""
    mem_gb: int = 8
    """Memory per node in GiB."""
    time_min: int = 60
    """Time limit of each attempt in minutes."""
    partition: str = ""
    """SLURM partition (empty: the cluster's default)."""
    account: str = ""
    """SLURM account to charge (empty: the user's default)."""
    qos: str = ""
    """SLURM quality of service (empty: none)."""
    constraint: str = ""
    """SLURM node feature constraint, e.g. `v100` (empty: none)."""
    exclusive: bool = False
    """Ask for whole nodes."""
    signal_delay_s: int = 90
    """Seconds before the time limit at which SLURM sends USR2 so the run can checkpoint."""
    max_requeues: int = 10
    """Most automatic requeues (time limit or preemption) of one job before it stops; `resume` starts a new count."""
    max_failures: int = 3
    """Most automatic retries of one job after a transient failure (a rank killed, a collective timed out); 0: none."""
    array_parallelism: int = 0
    """Members of a sweep's job array that run at once (`%N` of sbatch --array; local sweeps: processes at once); 0: all (local: 1)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further sbatch options, passed to submitit's slurm_additional_parameters."""

    @property
    def ntasks_per_node(self) -> int:
        """Processes per node with the default resolved: one per GPU, or 1 on CPU jobs."""
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def validate(self) -> None:
        _check(self.nodes >= 1, "nodes", f"must be >= 1, got {self.nodes}")
        _check(self.array_parallelism >= 0, "array_parallelism", f"must be >= 0, got {self.array_parallelism}")
        _check(self.tasks_per_node >= 0, "tasks_per_node", f"must be >= 0 (0: one per GPU), got {self.tasks_per_node}")
        _check(self.gpus_per_node >= 0, "gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        _check(
            self.gpus_per_node == 0 or self.ntasks_per_node <= self.gpus_per_node,
            "tasks_per_node",
            f"{self.tasks_per_node} tasks cannot each get a GPU of gpus_per_node={self.gpus_per_node}",
        )
        _check(
            self.gpus_per_node <= self.ntasks_per_node,
            "gpus_per_node",
            f"{self.gpus_per_node} GPUs per node but only {self.ntasks_per_node} tasks to use them (one GPU per task): "
            f"set tasks_per_node to {self.gpus_per_node} (or 0: one per GPU), or gpus_per_node to {self.ntasks_per_node}",
        )
        _check(self.cpus_per_task >= 1, "cpus_per_task", f"must be >= 1, got {self.cpus_per_task}")
        _check(self.mem_gb >= 1, "mem_gb", f"must be >= 1, got {self.mem_gb}")
        _check(self.time_min >= 1, "time_min", f"must be >= 1, got {self.time_min}")
        _check(self.signal_delay_s >= 0, "signal_delay_s", f"must be >= 0, got {self.signal_delay_s}")
        _check(
            self.signal_delay_s < self.time_min * 60,
            "signal_delay_s",
            f"{self.signal_delay_s} s is not shorter than the time limit ({self.time_min} min): the warning would come at the start",
        )
        _check(self.max_requeues >= 0, "max_requeues", f"must be >= 0, got {self.max_requeues}")
        _check(self.max_failures >= 0, "max_failures", f"must be >= 0, got {self.max_failures}")
        for key in self.extra:
            flag = str(key).lstrip("-").replace("_", "-")
            _check(flag not in MANAGED_SBATCH, f"extra.{key}",
                   f"--{flag} is set by the launcher: use {MANAGED_SBATCH.get(flag)}")


STAGES = ("prior", "shards", "embed", "train", "eval")
"""The pipeline's stages in the order they are given (`lit.stages.NEEDS`: which of them each one waits for)."""


@dataclass(frozen=True)
class StageConfig:
    """Resources of one pipeline stage's SLURM job; 0, empty or null takes the `slurm` section's value."""

    nodes: int = 0
    """Nodes (0: slurm.nodes, the training allocation)."""
    tasks_per_node: int = 0
    """Processes per node (0: one per GPU, 1 without GPUs)."""
    gpus_per_node: int | None = None
    """GPUs per node (null: slurm.gpus_per_node; 0: a CPU job)."""
    cpus_per_task: int = 0
    """CPU cores per process (0: slurm.cpus_per_task)."""
    mem_gb: int = 0
    """Memory per node in GiB (0: slurm.mem_gb)."""
    time_min: int = 0
    """Time limit of each attempt in minutes (0: slurm.time_min)."""
    partition: str = ""
    """SLURM partition (empty: slurm.partition)."""
    constraint: str = ""
    """Node feature constraint (empty: slurm.constraint)."""

    def validate(self) -> None:
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "time_min"):
            _check(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _check(self.gpus_per_node is None or self.gpus_per_node >= 0, "gpus_per_node",
               f"must be >= 0 or null, got {self.gpus_per_node}")


@dataclass(frozen=True)
class ShardsStageConfig(StageConfig):
    """Resources of `lit shards` (train and val): CPU nodes; the tasks split the shards between them."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int | None = 0


@dataclass(frozen=True)
class PriorStageConfig(StageConfig):
    """Resources of `lit prior`: one process on a CPU node (it reads only the annotations); 1 GPU at most."""

    nodes: int = 1
    """Nodes: 1 (the prior trains in one process)."""
    tasks_per_node: int = 1
    """Processes per node: 1."""
    gpus_per_node: int | None = 0
    """GPUs per node: 0 (a CPU job, prior.device cpu) or 1 (with prior.device auto or cuda)."""

    def validate(self) -> None:
        super().validate()
        _check(self.nodes == 1, "nodes", f"the prior trains in one process on one node: set 1, got {self.nodes}")
        _check(self.tasks_per_node == 1, "tasks_per_node", f"the prior trains in one process: set 1, got {self.tasks_per_node}")
        _check(self.gpus_per_node in (0, 1), "gpus_per_node", f"0 (a CPU job) or 1 (with prior.device: auto or cuda), "
               f"got {self.gpus_per_node}")


@dataclass(frozen=True)
class EmbedStageConfig(StageConfig):
    """Resources of `lit embed` (train and val): by default the training allocation."""


@dataclass(frozen=True)
class EvalStageConfig(StageConfig):
    """Resources of the final zero-shot evaluation: one node of the training allocation's shape."""

    nodes: int = 1


@dataclass(frozen=True)
class PipelineConfig:
    """The stages `python -m launcher submit` runs as SLURM jobs, each after the stages it reads (afterok)."""

    stages: tuple[str, ...] = ()
    """Stages in order, from prior, shards, embed, train, eval (empty: train only); complete ones are skipped; each waits for the ones it reads (eval for prior and train)."""
    prior: PriorStageConfig = field(default_factory=PriorStageConfig)
    """Resources of the prior stage (`lit prior`: the location prior, beside shards and embed)."""
    shards: ShardsStageConfig = field(default_factory=ShardsStageConfig)
    """Resources of the shards stage."""
    embed: EmbedStageConfig = field(default_factory=EmbedStageConfig)
    """Resources of the embed stage."""
    eval: EvalStageConfig = field(default_factory=EvalStageConfig)
    """Resources of the eval stage."""
    embed_batch_size: int = 256
    """Images per forward pass of the embed stage on each rank."""
    embed_dtype: Literal["float16", "float32"] = "float16"
    """Storage type of the cached embeddings."""

    def validate(self) -> None:
        for i, stage in enumerate(self.stages):
            _check(stage in STAGES, f"stages[{i}]", f"{stage!r} is not a stage; choose from {', '.join(STAGES)}")
        order = [STAGES.index(s) for s in self.stages]
        _check(order == sorted(set(order)), "stages", f"{list(self.stages)}: give each stage once, in the order {', '.join(STAGES)}")
        _check(self.embed_batch_size >= 1, "embed_batch_size", f"must be >= 1, got {self.embed_batch_size}")


@dataclass(frozen=True)
class ContainerConfig:
    """The Singularity/Apptainer image every task runs in."""

    image: str = ""
    """Path of the .sif image (empty: run without a container)."""
    binds: tuple[str, ...] = ()
    """Bind mounts `host[:container]` (dataset, run directory, model folders)."""
    nv: bool = True
    """Pass --nv so the container sees the host's NVIDIA driver and GPUs."""
    runtime: Literal["singularity", "apptainer"] = "singularity"
    """Container command on the cluster."""

    def validate(self) -> None:
        for i, bind in enumerate(self.binds):
            _check(bool(bind.strip()) and "," not in bind and len(bind.split(":")) <= 3, f"binds[{i}]",
                   f"{bind!r} is not one bind `host[:container[:ro]]` (give one entry per folder)")

