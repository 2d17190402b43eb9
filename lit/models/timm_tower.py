"""timm image towers for `lit models prepare`: `model.image_pretrained: timm:MODEL.TAG`.

The job's image tower is open_clip's timm adapter (`TimmModel`, vision_cfg `timm_model_name`),
built with `timm_model_pretrained: false`: nothing downloads at run time. On a login node,
`prepare` downloads the tag with timm's own `timm.create_model(MODEL.TAG, pretrained=True,
num_classes=0)` (huggingface_hub's cache: `--cache-dir`, `HF_HUB_OFFLINE=1`), loads its state
dict into the job's `model.visual` (keys `trunk.*`; `head.*` too when the tower has a trainable
projection) and writes that. The reference features are timm's own pretrained model's pooled
features on timm's eval transform at crop_pct 1.0 (open_clip's eval transform, a center crop of
the short side, has no crop_pct).

The tower is frozen, so the jobs use no projection: `timm_proj: none` passes the trunk's pooled
features through, and `embed_dim` is the trunk's feature width (the trainable text tower
projects into it). A projection head that would be initialized at random and frozen is refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit.config import Config
from lit.configlib import ConfigError
from lit.models.fetch import first_line
from lit.models.plans import TIMM_PREFIX, ImagePlan
from lit.models.samples import generated_images
from lit.models.verify import PREPARE, config_key

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn


PREFIX = TIMM_PREFIX
PROJECTIONS = ("linear", "mlp")
"""open_clip timm_proj values that add a projection head (open_clip's default is linear)."""
ATTENTION_POOLS = ("abs_attn", "rot_attn")
"""open_clip timm_pool values that add an attention pool with its own projection."""


def is_timm(value: str) -> bool:
    return value.startswith(PREFIX)


def _example(name: str, features: int | str = "N") -> str:
    return (f"vision_cfg {{timm_model_name: {name}, timm_model_pretrained: false, timm_pool: avg, timm_proj: none, "
            f"image_size: SIZE}} and embed_dim: {features}")


def num_features(name: str) -> int:
    """The pooled feature width of timm model `name` (built on the meta device: no weights, no download)."""
    import timm
    import torch

    with torch.device("meta"):
        model: Any = timm.create_model(name, pretrained=False, num_classes=0)  # timm types its attributes as Tensor | Module
    return int(model.num_features)


def plan(cfg: Config, job: str, target: Path, model_cfg: dict[str, Any]) -> ImagePlan:
    """The plan of a `timm:MODEL.TAG` image tower; ConfigError naming the key when the job's vision_cfg does not fit it."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag


    value = cfg.model.image_pretrained
    name, tag = split_model_name_tag(value[len(PREFIX):])
    if not name or not tag:
        raise ConfigError(job, "model.image_pretrained", f"{value!r} is not timm:MODEL.TAG (a timm model and pretrained tag, "
                          "e.g. timm:convnext_base.fb_in22k_ft_in1k; timm.list_pretrained('convnext_base*') lists them)")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ConfigError(job, "model.image_pretrained", f"{name!r} is not a timm model"
                          f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}: see timm.list_models()")
    try:
        pcfg = get_pretrained_cfg(f"{name}.{tag}")
    except RuntimeError:
        pcfg = None
    if pcfg is None:
        tags = ", ".join(timm.list_pretrained(f"{name}.*")) or "none"
        raise ConfigError(job, "model.image_pretrained", f"timm has no pretrained tag {tag!r} for {name}; its tags: {tags}")
    pretrained_cfg = pcfg.to_dict()
    vision = model_cfg.get("vision_cfg") or {}
    features = num_features(name)
    key = lambda k: config_key(cfg, k)  # noqa: E731
    own = str(vision.get("timm_model_name") or "")
    own_name, own_tag = split_model_name_tag(own) if own else ("", "")
    if own_name != name or own_tag not in ("", tag):
        got = f"is {own!r}" if own else "is not set (the job would build open_clip's own ViT, not the timm tower)"
        raise ConfigError(job, key("vision_cfg.timm_model_name"), f"{got}, but model.image_pretrained is {value}: "
                          f"set {_example(name, features)}")
    if vision.get("timm_model_pretrained"):
        raise ConfigError(job, key("vision_cfg.timm_model_pretrained"), "is true: open_clip would download timm's default "
                          f"weights at run time; set it to false (the weights come from model.image_weights, written by {PREPARE})")
    proj, pool = str(vision.get("timm_proj", "linear") or ""), str(vision.get("timm_pool", "avg") or "")
    head = proj in PROJECTIONS or pool in ATTENTION_POOLS
    if head and cfg.model.lock_image and cfg.model.unlocked_groups == 0:
        which = ("vision_cfg.timm_proj", f"timm_proj: {proj}" + (" (open_clip's default)" if "timm_proj" not in vision else "")) \
            if proj in PROJECTIONS else ("vision_cfg.timm_pool", f"timm_pool: {pool}")
        raise ConfigError(job, key(which[0]), f"{which[1]} adds a projection head that no pretrained checkpoint holds: it would be "
                          f"initialized at random and frozen (model.lock_image, unlocked_groups 0). Set timm_proj: none, "
                          f"timm_pool: avg and embed_dim: {features} ({name}'s feature width; the text tower projects into it)")
    if not head and int(model_cfg.get("embed_dim", 0)) != features:
        raise ConfigError(job, key("embed_dim"), f"{model_cfg.get('embed_dim')}, but with timm_proj: none the image features are "
                          f"{name}'s pooled trunk features, {features} wide: set embed_dim: {features}")
    if not pool:
        raise ConfigError(job, key("vision_cfg.timm_pool"), f"is empty: {name}'s feature map would not be pooled; set timm_pool: avg "
                          f"(or {name}'s own pooling)")
    size = int(pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    raw_size = vision.get("image_size", 224)
    job_size = int(raw_size[-1] if isinstance(raw_size, (list, tuple)) else raw_size)
    if job_size != size:
        raise ConfigError(job, key("vision_cfg.image_size"), f"{raw_size}, but {name}.{tag} was trained at {size}: set image_size: "
                          f"{size} (timm's pretrained cfg input_size)")
    return ImagePlan(name, tag, pretrained_cfg, target, kind="timm")


def reference(plan: ImagePlan, cfg: Config, job: str, model_cfg: dict[str, Any], cache_dir: str | None, images: int,
              steps: Callable[[str], None], note: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], list[Image.Image],
                                                                                    torch.Tensor, torch.Tensor]:
    """Download the tag with timm, build the job's model.visual from it: (its state dict, images, inputs, reference features)."""
    import timm
    import torch
    from open_clip.model import _build_vision_tower  # what open_clip's CLIP builds as model.visual
    from timm.data import create_transform, resolve_data_config


    steps(f"image tower: timm.create_model({plan.name}.{plan.tag!s}, pretrained=True, num_classes=0) (huggingface_hub cache)")
    try:
        ref = timm.create_model(f"{plan.name}.{plan.tag}", pretrained=True, num_classes=0, cache_dir=cache_dir)
    except Exception as err:  # huggingface_hub's errors (offline and not cached, network, not found) and torch.hub's
        where = plan.pretrained_cfg.get("hf_hub_id") or plan.pretrained_cfg.get("url")
        raise ConfigError(job, "model.image_pretrained", f"{plan.label}: timm.create_model(pretrained=True) failed ({where}): "
                          f"{type(err).__name__}: {first_line(err)} (run on a login node with network; with HF_HUB_OFFLINE=1 "
                          f"the weights must already be in the cache {cache_dir or 'of huggingface_hub'})") from err
    ref.eval()
    data_cfg = resolve_data_config(model=ref)
    crop_pct = data_cfg.get("crop_pct")
    transform = create_transform(**{**data_cfg, "crop_pct": 1.0})
    note(f"timm's eval transform at crop_pct 1.0 (the tag's is {crop_pct}): {data_cfg['interpolation']}, "
         f"mean {tuple(data_cfg['mean'])}, std {tuple(data_cfg['std'])}")
    steps(f"image tower: loading it into the job's model.visual (open_clip TimmModel {plan.name}) as the reference")
    torch.manual_seed(cfg.train.seed)
    visual: Any = _build_vision_tower(int(model_cfg["embed_dim"]), dict(model_cfg["vision_cfg"]))  # open_clip's TimmModel
    trunk: nn.Module = visual.trunk
    try:
        trunk.load_state_dict(ref.state_dict(), strict=True)
    except RuntimeError as err:
        raise ConfigError(job, config_key(cfg, "vision_cfg"), f"the job's timm tower does not fit {plan.label}: "
                          f"{first_line(err)}; set {_example(plan.name)}") from err
    visual.eval()
    size = int(data_cfg["input_size"][-1])
    pil = generated_images(max(1, images), size)
    x_ref = torch.stack([transform(im) for im in pil])
    with torch.no_grad():
        f_ref = visual.head(ref(x_ref))  # timm's own pretrained features (then the job's head, empty with timm_proj: none)
        f_job = visual(x_ref[:1])
    if f_ref.ndim != 2 or tuple(f_job.shape[1:]) != tuple(f_ref.shape[1:]):
        raise ConfigError(job, config_key(cfg, "vision_cfg.timm_pool"), f"the job's tower gives features of shape "
                          f"{tuple(f_job.shape[1:])}, timm's {plan.label} {tuple(f_ref.shape[1:])}: use the model's own "
                          "pooling (timm_pool: avg for CNNs and Swin)")
    state = {k: v.detach().contiguous() for k, v in visual.state_dict().items()}
    return state, pil, x_ref, f_ref


def source(plan: ImagePlan) -> dict[str, Any]:
    """The provenance fields of `W.source.json` for a timm tower (no quick_gelu: timm towers ignore it)."""
    import timm

    return {"pretrained": plan.label, "model": plan.name, "tag": plan.tag, "library": "timm",
            "hf_hub": plan.pretrained_cfg.get("hf_hub_id") or "", "url": plan.pretrained_cfg.get("url") or "",
            "timm": str(timm.__version__), "crop_pct": plan.pretrained_cfg.get("crop_pct")}


def vision_hint(plan: ImagePlan) -> str:
    return f"{plan.label} needs {_example(plan.name, num_features(plan.name))}"
