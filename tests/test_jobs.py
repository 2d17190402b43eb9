"""The image-tower comparison sweep (jobs/sweeps/inat21-image-towers.yaml): members, towers, caches; nothing downloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.sweep import prep_groups, tower_key
from launcher.sweep_spec import Member, load_spec, resolve
from lit.config import load_config
from lit.configlib import to_dict
from lit.models import timm_tower
from lit.models.verify import raw_model_config
from tests.conftest import REPO

SWEEP = REPO / "jobs" / "sweeps" / "inat21-image-towers.yaml"
PAPER = REPO / "jobs" / "inat21-vitl14-warmup1000.yaml"
TIMM = {"swin-b": ("timm:swin_base_patch4_window7_224.ms_in22k_ft_in1k", 1024, "SwinTransformer"),
        "convnext-b": ("timm:convnext_base.fb_in22k_ft_in1k", 1024, "ConvNeXt")}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def members() -> list[Member]:
    spec, path = load_spec(SWEEP)
    return resolve(spec, str(path))[1]


def test_three_members_with_their_own_towers_and_caches(members: list[Member]) -> None:
    by_name = {m.name: m.cfg for m in members}
    assert list(by_name) == ["vit-l14", "swin-b", "convnext-b"]
    for key in ("image_weights", "image_pretrained", "name"):
        assert len({getattr(c.model, key) for c in by_name.values()}) == 3, key
    for key in ("train_embeddings", "val_embeddings"):
        assert len({getattr(c.data, key) for c in by_name.values()}) == 3, key
    assert {c.data.train_shards for c in by_name.values()} == {by_name["vit-l14"].data.train_shards}
    groups = prep_groups(members)  # the sweep's own check: two towers never share one cache
    assert len(groups["prior"]) == 1 and len(groups["shards"]) == 1 and len(groups["embed"]) == 3
    assert all(list(c.pipeline.stages) == ["prior", "shards", "embed", "train"] and c.data.image_source == "cached"
               for c in by_name.values())
    assert {c.prior.out for c in by_name.values()} == {load_config(PAPER).prior.out}  # the paper jobs' prior, trained once
    assert by_name["vit-l14"].model.image_pretrained == "ViT-L-14/openai"
    assert {n: by_name[n].model.image_pretrained for n in TIMM} == {n: v[0] for n, v in TIMM.items()}


def test_the_members_differ_from_the_paper_job_only_in_the_image_tower(members: list[Member]) -> None:
    paper = load_config(PAPER)
    paper_model = raw_model_config(paper) or {}
    for m in members:
        model = raw_model_config(m.cfg) or {}
        assert model["text_cfg"] == paper_model["text_cfg"], m.name  # all-MiniLM-L12-v2, the same folder
        assert m.cfg.model.text_pretrained == paper.model.text_pretrained
        assert to_dict(m.cfg.captions) == to_dict(paper.captions) and to_dict(m.cfg.train) == to_dict(paper.train), m.name
        assert to_dict(m.cfg.eval) == to_dict(paper.eval) and to_dict(m.cfg.shards) == to_dict(paper.shards), m.name
        assert m.cfg.data.batch_size == paper.data.batch_size and m.cfg.slurm.nodes == paper.slurm.nodes
    vit = next(m.cfg for m in members if m.name == "vit-l14")
    assert vit.model.image_weights == paper.model.image_weights and raw_model_config(vit) == paper_model
    assert vit.data.train_embeddings == paper.data.train_embeddings
    # the same tower, views and shards as the paper jobs: sharing their cache is what the sweep allows
    from dataclasses import replace

    assert tower_key(vit) == tower_key(replace(paper, model=replace(paper.model, name=vit.model.name)))


def test_the_timm_members_build_open_clips_timm_tower_without_projection(members: list[Member]) -> None:
    import torch
    from open_clip.model import _build_vision_tower
    from timm.models import get_pretrained_cfg

    for m in members:
        if m.name not in TIMM:
            continue
        label, width, trunk = TIMM[m.name]
        model = raw_model_config(m.cfg) or {}
        vision = model["vision_cfg"]
        assert model["embed_dim"] == width and vision["timm_proj"] == "none" and vision["timm_model_pretrained"] is False
        plan = timm_tower.plan(m.cfg, m.name, Path(m.cfg.model.image_weights), model)  # prepare's own checks, no download
        assert plan.label == label and timm_tower.num_features(vision["timm_model_name"]) == width
        with torch.device("meta"):  # the architecture the job builds, without weights
            visual = _build_vision_tower(model["embed_dim"], dict(vision))
        assert type(visual).__name__ == "TimmModel" and len(visual.head) == 0
        assert type(visual.trunk).__name__ == trunk and visual.trunk.num_features == width
        assert visual.trunk.num_classes == 0 and not [k for k in visual.state_dict() if not k.startswith("trunk.")]
        pcfg = get_pretrained_cfg(label.removeprefix("timm:"))
        pre = model["preprocess_cfg"]
        assert tuple(pre["mean"]) == pcfg.mean and tuple(pre["std"]) == pcfg.std and pre["interpolation"] == pcfg.interpolation
        assert vision["image_size"] == pcfg.input_size[-1]


def test_lit_models_prepare_reads_the_sweep_file() -> None:
    from lit.models.cli import sweep_jobs

    jobs = sweep_jobs(str(SWEEP), ["slurm.account=abc"], ["swin-b"]) or []
    assert [(label.rsplit(" ", 1)[-1], Path(job).resolve()) for label, job, _ in jobs] == [
        ("swin-b", REPO / "jobs" / "inat21-image-towers-base.yaml")]
    cfg = load_config(jobs[0][1], jobs[0][2])
    assert cfg.model.image_pretrained == TIMM["swin-b"][0] and cfg.slurm.account == "abc"
    assert len(sweep_jobs(str(SWEEP), [], []) or []) == 3 and sweep_jobs(str(PAPER), [], []) is None


def test_the_sweep_dry_run_lists_the_three_members() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "launcher", "sweep", str(SWEEP), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 2 and "submit would stop here" in done.stdout, done.stderr  # no container image here
    assert "3 members" in done.stdout
    for i, name in enumerate(["vit-l14", "swin-b", "convnext-b"]):
        assert f"[{i}] {name}: " in done.stdout
    assert "#SBATCH --array=0-2%1" in done.stdout and done.stdout.count("## shared stage embed") == 3
    assert done.stdout.count("## shared stage prior") == 1 and "<job id of prior prior0>" in done.stdout
