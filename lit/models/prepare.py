"""`lit models prepare`: write the towers a job names into the files and folders the job loads.

Run on a login node (it has network; compute nodes often do not). The image tower comes from an
open_clip pretrained tag (`model.image_pretrained: NAME/TAG`, e.g. `ViT-L-14/openai`) through
open_clip's own `get_pretrained_cfg` and `download_pretrained`; it is written to
`model.image_weights` as a state dict of `model.visual` (the checkpoint's `visual.*` tensors
without the prefix). The text tower comes from a Hugging Face id (`model.text_pretrained`)
through huggingface_hub's `snapshot_download`; its files are copied (no links into the cache)
into the folder the model config's `text_cfg.hf_model_name` names. Both downloads go through
the usual caches (`--cache-dir`, default: huggingface_hub's); with `HF_HUB_OFFLINE=1` they
resolve from the cache only.

Before anything is put in place, everything is written beside its target under a temporary
name and checked: the job's model is built with `lit.model.build_model` from those files
(every tensor must load by name, with its shape), and on a batch of generated images the
job's image tower must give the features of open_clip's own pretrained model,
`open_clip.create_model_and_transforms(NAME, pretrained=TAG)` built with the activation the
tag's pretrained config names (`quick_gelu`): open_clip itself only warns when a model config
and a tag disagree there, and OpenAI's ViT-L/14 uses QuickGELU. Only then do the files replace
the targets, with sha256 sums beside them that `lit doctor` (the job's preflight) verifies.

A timm image tower (`model.image_pretrained: timm:MODEL.TAG`, open_clip's timm adapter) comes
through timm's own `timm.create_model(..., pretrained=True)` instead: `lit.models.timm_tower`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit.config import Config
from lit.configlib import ConfigError
from lit.io import atomic_write, fsync_dir, write_json
from lit.log import logger
from lit.models import checks, fetch, timm_tower
from lit.models.plans import ImagePlan, TextPlan
from lit.models.samples import generated_images
from lit.models.verify import (
    PREPARE,
    TEXT_SUMS,
    config_key,
    raw_model_config,
    sha256_file,
    source_path,
    sums_path,
    sums_text,
    text_folder_value,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

FEATURE_RTOL = 1e-4
"""Features agree when max |job - open_clip| <= 1e-5 + FEATURE_RTOL * max |open_clip| (fp32 on CPU)."""


@dataclass(frozen=True)
class Written:
    """One tower put in place."""

    tower: str
    """`image` or `text`."""
    path: Path
    size: int
    """Bytes (a folder: all its files)."""
    sha256: str
    """The weights file's sha256, or that of the folder's SHA256SUMS file."""
    files: int
    source: str
    sums: Path
    """The sums file the preflight verifies."""


@dataclass(frozen=True)
class Prepared:
    """What `prepare_models` wrote and what it checked."""

    written: list[Written]
    fingerprint: str
    """The job's image tower fingerprint (what `lit embed` records in a cache manifest)."""
    feature_diff: float | None
    """Max |job - open_clip| image feature difference on the generated images (None: no image tower prepared)."""
    images: int


class _Steps:
    """One log line per step (`[i/n] what`), and indented notes of what a step found."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.log = total, 0, log

    def __call__(self, text: str) -> None:
        self.done += 1
        self.log(f"[{self.done}/{self.total}] {text}")

    def note(self, text: str) -> None:
        self.log(f"      {text}")


# ---------------------------------------------------------------- plan: what the job names, checked before any download


def _plan(cfg: Config, job: str, force: bool) -> tuple[ImagePlan | None, TextPlan | None, dict[str, Any]]:
    m = cfg.model
    if not m.image_pretrained and not m.text_pretrained:
        raise ConfigError(job, "model.image_pretrained", "nothing to prepare: name the image tower in model.image_pretrained "
                          "(open_clip NAME/TAG, e.g. ViT-L-14/openai) and/or the text tower in model.text_pretrained "
                          "(a Hugging Face id, e.g. sentence-transformers/all-MiniLM-L12-v2)")
    model_cfg = raw_model_config(cfg)
    if model_cfg is None:
        raise ConfigError(job, "model.name", f"unknown model {m.name!r}: give an inline model.config or an open_clip model name")
    return _image_plan(cfg, job, force, model_cfg), _text_plan(cfg, job, force, model_cfg), model_cfg


def _image_plan(cfg: Config, job: str, force: bool, model_cfg: dict[str, Any]) -> ImagePlan | None:
    import open_clip

    m = cfg.model
    if not m.image_pretrained:
        return None
    if timm_tower.is_timm(m.image_pretrained):
        return timm_tower.plan(cfg, job, _image_target(cfg, job, force), model_cfg)
    name, sep, tag = m.image_pretrained.rpartition("/")
    if not sep or not name or not tag:
        raise ConfigError(job, "model.image_pretrained", f"{m.image_pretrained!r} is not NAME/TAG (an open_clip model and "
                          "pretrained tag, e.g. ViT-L-14/openai or ViT-L-14/laion2b_s32b_b82k)")
    if open_clip.get_model_config(name) is None:
        raise ConfigError(job, "model.image_pretrained", f"{name!r} is not an open_clip model (see open_clip.list_models())")
    pretrained_cfg = open_clip.pretrained.get_pretrained_cfg(name, tag)
    if not pretrained_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ConfigError(job, "model.image_pretrained", f"open_clip has no pretrained tag {tag!r} for {name}; its tags: {tags}")
    return ImagePlan(name, tag, dict(pretrained_cfg), _image_target(cfg, job, force))


def _image_target(cfg: Config, job: str, force: bool) -> Path:
    m = cfg.model
    if m.pretrained:
        raise ConfigError(job, "model.pretrained", f"is set ({m.pretrained}): a whole-model checkpoint replaces image_weights, "
                          "so the prepared image tower would not be used; clear model.pretrained or model.image_pretrained")
    if not m.image_weights or m.image_weights.startswith("pkg:"):
        raise ConfigError(job, "model.image_weights", f"{m.image_weights or 'empty'}: must be the local file the image tower is "
                          "written to, e.g. /models/vit-l-14-openai-visual.pt")
    target = Path(m.image_weights).expanduser()
    if target.exists() and not target.is_file():
        raise ConfigError(job, "model.image_weights", f"{target} exists and is not a file")
    if target.is_file() and not sums_path(target).is_file() and not force:
        raise ConfigError(job, "model.image_weights", f"{target} exists and was not written by {PREPARE} (no "
                          f"{sums_path(target).name} beside it): move it away, or pass --force to replace it")
    return target


def _text_plan(cfg: Config, job: str, force: bool, model_cfg: dict[str, Any]) -> TextPlan | None:
    m = cfg.model
    key = config_key(cfg, "text_cfg.hf_model_name")
    value = text_folder_value(model_cfg)
    if not m.text_pretrained:
        if value.startswith(("/", "~", ".")) and not Path(value).expanduser().exists():
            raise ConfigError(job, key, f"{value} does not exist, and model.text_pretrained is empty: name the text tower's "
                              "Hugging Face id there (e.g. sentence-transformers/all-MiniLM-L12-v2) so prepare writes it, "
                              "or put the folder there")
        return None
    if not value or value.startswith("pkg:"):
        raise ConfigError(job, key, f"{value or 'not set'}: model.text_pretrained ({m.text_pretrained}) needs a Hugging Face "
                          "text tower whose hf_model_name (and hf_tokenizer_name) is the local folder to write, "
                          "e.g. /models/all-MiniLM-L12-v2")
    if value == m.text_pretrained:
        raise ConfigError(job, key, f"{value!r} looks like a Hugging Face id: set it (and hf_tokenizer_name) to the local folder "
                          f"the job loads, e.g. /models/{m.text_pretrained.rsplit('/', 1)[-1]}; model.text_pretrained names the id")
    target = Path(value).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(job, key, f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / TEXT_SUMS).is_file() and not force:
        raise ConfigError(job, key, f"{target} holds files not written by {PREPARE} (no {TEXT_SUMS}): move it away, or pass "
                          "--force to replace it")
    return TextPlan(m.text_pretrained, target, value)


# ---------------------------------------------------------------- the command


def prepare_models(cfg: Config, *, job: str = "JOB.yaml", cache_dir: str | None = None, force: bool = False,
                   images: int = 4, log: Callable[[str], None] | None = None) -> Prepared:
    """Download, check and write the towers `cfg.model` names (see the module docstring); ConfigError on anything to fix.

    `job` names the job file in messages. `images` generated images are compared. Nothing is put in
    place unless every check passes.
    """
    import torch
    import torch.nn.functional as F

    from lit.model import build_model, clip_api, fingerprint, submodule

    steps = _Steps(0, log or logger.info)
    image_plan, text_plan, model_cfg = _plan(cfg, job, force)
    steps.total = 3 + (2 if text_plan else 0) + (3 if image_plan else 0)
    staged_paths: list[Path] = []
    try:
        staged_cfg = copy.deepcopy(model_cfg)
        text_staged: Path | None = None
        if text_plan is not None:
            steps(f"text tower: huggingface_hub.snapshot_download({text_plan.repo_id!r})")
            snapshot, patterns = fetch.snapshot(text_plan.repo_id, cache_dir, job)
            steps.note(f"cached snapshot {snapshot}")
            steps(f"text tower: copying {len(fetch.files(snapshot, patterns))} files beside {text_plan.target}")
            staged_paths.append(fetch.staging_name(text_plan.target))
            with fetch.writing(job, config_key(cfg, "text_cfg.hf_model_name"), text_plan.target):
                text_staged = fetch.stage_text(text_plan, snapshot, patterns)
            text_cfg = staged_cfg["text_cfg"]
            if text_cfg.get("hf_tokenizer_name") in (None, "", text_plan.folder_value):
                text_cfg["hf_tokenizer_name"] = str(text_staged)
            text_cfg["hf_model_name"] = str(text_staged)

        ref_sd: dict[str, torch.Tensor] = {}
        pil: list[Image.Image] = []
        x_ref = f_ref = None
        image_staged: Path | None = None
        if image_plan is not None and image_plan.kind == "timm":
            ref_sd, pil, x_ref, f_ref = timm_tower.reference(image_plan, cfg, job, model_cfg, cache_dir, images, steps, steps.note)
        elif image_plan is not None:
            steps(f"image tower: open_clip download_pretrained({image_plan.label})")
            checkpoint = fetch.download_checkpoint(image_plan, cache_dir, job)
            steps.note(f"checkpoint {checkpoint} ({checkpoint.stat().st_size / 2**20:.1f} MiB)")
            steps(f"image tower: open_clip.create_model_and_transforms({image_plan.name!r}, pretrained={image_plan.tag!r}, "
                  f"force_quick_gelu={image_plan.quick_gelu}) as the reference")
            import open_clip

            ref, _, ref_preprocess = open_clip.create_model_and_transforms(
                image_plan.name, pretrained=image_plan.tag, cache_dir=cache_dir, force_quick_gelu=image_plan.quick_gelu,
                device="cpu", precision="fp32", weights_only=True)
            ref.eval()
            ref_visual = submodule(ref, "visual")
            ref_sd = {k: v.detach().contiguous() for k, v in ref_visual.state_dict().items()}
            raw_size = getattr(ref_visual, "image_size", 224)
            size = int(raw_size[0] if isinstance(raw_size, (tuple, list)) else raw_size)
            pil = generated_images(max(1, images), size)
            x_ref = torch.stack([ref_preprocess(im) for im in pil])
            with torch.no_grad():
                f_ref = clip_api(ref).encode_image(x_ref)
            del ref, ref_visual
        if image_plan is not None:
            image_staged = fetch.staging_name(image_plan.target)
            staged_paths.append(image_staged)
            steps(f"image tower: writing {len(ref_sd)} tensors of model.visual beside {image_plan.target}")
            with fetch.writing(job, "model.image_weights", image_plan.target):
                image_plan.target.parent.mkdir(parents=True, exist_ok=True)
                torch.save(ref_sd, image_staged)

        steps("checking shapes: lit.model.build_model with the prepared files")
        model_section = dataclasses.replace(
            cfg.model, config=staged_cfg, image_weights=str(image_staged) if image_staged else cfg.model.image_weights)
        built = checks.build(cfg, job, model_section, image_plan, ref_sd, build_model)
        model = built.model.eval()
        if image_plan is not None:
            job_sd = submodule(model, "visual").state_dict()
            diffs = checks.shape_diffs(job_sd, ref_sd)
            if diffs:
                raise checks.vision_error(cfg, job, image_plan, diffs, "tensor names or shapes differ")
            changed = [k for k, v in job_sd.items() if not torch.equal(v.to(ref_sd[k].dtype), ref_sd[k])]
            if changed:
                raise checks.vision_error(cfg, job, image_plan, [f"{k}: not loaded by name" for k in changed], "weights loaded in order")
            steps.note(f"image tower: all {len(job_sd)} tensors of {image_plan.label} loaded by name")
        if text_plan is not None and text_staged is not None:
            problems = checks.text_problems(model, text_staged)
            if problems:
                more = f"; … ({len(problems) - 5} more)" if len(problems) > 5 else ""
                raise ConfigError(job, "model.text_pretrained", f"{text_plan.repo_id}: the job's text tower does not hold its "
                                  f"weights: {'; '.join(problems[:5])}{more}")
            hf_config = getattr(getattr(getattr(model, "text", None), "transformer", None), "config", None)
            limit = getattr(hf_config, "max_position_embeddings", None)
            context = int(staged_cfg["text_cfg"].get("context_length", 77))
            if limit is not None and context > int(limit):
                raise ConfigError(job, config_key(cfg, "text_cfg.context_length"), f"{context} tokens, but {text_plan.repo_id} "
                                  f"has {limit} positions: set it to at most {limit}")
            steps.note(f"text tower: every tensor of {text_plan.repo_id} loaded")

        library = "timm" if image_plan is not None and image_plan.kind == "timm" else "open_clip"
        steps(f"comparing image features with {library}'s own pretrained model on {len(pil)} generated images"
              if image_plan else "image features: no image tower prepared, nothing to compare")
        diff_value: float | None = None
        if image_plan is not None and x_ref is not None and f_ref is not None:
            x_job = torch.stack([built.preprocess_val(im) for im in pil])
            if x_job.shape != x_ref.shape or float((x_job - x_ref).abs().max()) > 1e-5:
                raise ConfigError(job, config_key(cfg, "preprocess_cfg"), checks.preprocess_message(image_plan, x_job, x_ref))
            with torch.no_grad():
                f_job = clip_api(model).encode_image(x_ref)
            diff_value = float((f_job - f_ref).abs().max())
            tolerance = 1e-5 + FEATURE_RTOL * float(f_ref.abs().max())
            cosine = float(F.cosine_similarity(f_job, f_ref, dim=-1).min())
            if not diff_value <= tolerance:
                raise checks.feature_error(cfg, job, image_plan, staged_cfg, diff_value, tolerance, cosine)
            steps.note(f"max |difference| {diff_value:.2e} (tolerance {tolerance:.1e}), cosine similarity >= {cosine:.6f}")
        tower_fp = fingerprint(model, built.preprocess_val)
        del built, model

        steps("putting the files in place with their sha256 sums")
        written: list[Written] = []
        if text_plan is not None and text_staged is not None:
            fetch.put_folder(text_staged, text_plan.target)
            sums = text_plan.target / TEXT_SUMS
            files = [p for p in text_plan.target.rglob("*") if p.is_file()]
            written.append(Written("text", text_plan.target, sum(p.stat().st_size for p in files), sha256_file(sums),
                                   len(files), text_plan.repo_id, sums))
        if image_plan is not None and image_staged is not None:
            import open_clip

            digest = sha256_file(image_staged)
            os.replace(image_staged, image_plan.target)
            fsync_dir(image_plan.target.parent)
            atomic_write(sums_path(image_plan.target), sums_text({image_plan.target.name: digest}))
            origin = timm_tower.source(image_plan) if image_plan.kind == "timm" else {
                "pretrained": image_plan.label, "model": image_plan.name, "tag": image_plan.tag,
                "quick_gelu": image_plan.quick_gelu, "hf_hub": image_plan.pretrained_cfg.get("hf_hub", ""),
                "url": image_plan.pretrained_cfg.get("url", ""), "open_clip": str(open_clip.__version__)}
            write_json(source_path(image_plan.target), {**origin, "tensors": len(ref_sd),
                "parameters": sum(v.numel() for v in ref_sd.values()), "fingerprint": tower_fp, "prepared_by": PREPARE,
            })
            written.append(Written("image", image_plan.target, image_plan.target.stat().st_size, digest, 1,
                                   image_plan.label, sums_path(image_plan.target)))
        return Prepared(written, tower_fp, diff_value, len(pil))
    finally:
        for path in staged_paths:
            fetch.remove(path)
