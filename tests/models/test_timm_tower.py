"""`lit models prepare` with a timm image tower (`timm:MODEL.TAG`), offline: timm's real download from a local hub cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from lit.config import ConfigError
from lit.doctor import job_checks, ok
from lit.model import build_model, clip_api, fingerprint, image_tower_locked, load_image_tower
from lit.models import timm_tower
from lit.models.prepare import prepare_models
from lit.models.samples import generated_images
from lit.models.verify import read_source, read_sums, sha256_file, source_path, sums_path
from tests.models.conftest import TIMM_FEATURES, TIMM_MODEL, TIMM_TAG, Sources, timm_job_model, write_job

pytestmark = pytest.mark.timeout(120)
LABEL = f"timm:{TIMM_MODEL}.{TIMM_TAG}"


@pytest.fixture
def timm_offline(offline: Sources, timm_sources: Path) -> Sources:
    return offline


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


def timm_reference(cache: Path) -> torch.nn.Module:
    import timm

    return timm.create_model(f"{TIMM_MODEL}.{TIMM_TAG}", pretrained=True, num_classes=0, cache_dir=str(cache)).eval()


def test_a_timm_tower_is_written_checked_and_verified(timm_offline: Sources, tmp_path: Path) -> None:
    from lit.cli import main
    from lit.log import console

    path, cfg = write_job(tmp_path, timm_job_model(tmp_path, text=True))
    lines: list[str] = []
    prepared = prepare_models(cfg, job=str(path), cache_dir=str(timm_offline.cache), images=3, log=lines.append)
    assert [w.tower for w in prepared.written] == ["text", "image"] and prepared.images == 3
    assert prepared.feature_diff is not None and prepared.feature_diff <= 1e-5, prepared.feature_diff
    assert any("timm.create_model" in line for line in lines) and any("crop_pct 1.0 (the tag's is 0.95)" in line for line in lines)

    weights = Path(cfg.model.image_weights)
    state = torch.load(weights, weights_only=True)
    assert state and all(k.startswith("trunk.") for k in state)  # a state dict of model.visual: no projection head
    assert "trunk.head.fc.weight" not in state  # the ImageNet classifier is not part of the tower
    assert read_sums(sums_path(weights)) == {weights.name: sha256_file(weights)}
    source = read_source(source_path(weights)) or {}
    assert source["pretrained"] == LABEL and source["library"] == "timm" and source["hf_hub"] == f"timm/{TIMM_MODEL}.{TIMM_TAG}"
    assert "quick_gelu" not in source and source["fingerprint"] == prepared.fingerprint
    subprocess.run(["sha256sum", "-c", "--quiet", sums_path(weights).name], cwd=weights.parent, check=True)
    checks = job_checks(cfg)
    assert ok(checks) and not [c for c in checks if c.status == "warn"], checks
    assert LABEL in by_name(checks)["model.image_weights"].detail
    with console.capture():
        assert main(["models", "verify", str(path)]) == 0

    # what the job builds from the prepared file alone: open_clip's TimmModel, frozen, no head, timm's own features
    built = build_model(cfg.model)
    visual = built.model.visual
    assert type(visual).__name__ == "TimmModel" and len(visual.head) == 0 and image_tower_locked(built.model)
    assert fingerprint(built.model, built.preprocess_val) == prepared.fingerprint
    reference = timm_reference(timm_offline.cache)
    images = torch.stack([built.preprocess_val(im) for im in generated_images(4, 160, seed=7)])
    with torch.no_grad():
        ours = clip_api(built.model.eval()).encode_image(images)
        theirs = reference(images)
    assert ours.shape == (4, TIMM_FEATURES)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    # the file loads by name, whatever the order of its tensors (lit.model.load_image_tower)
    shuffled = tmp_path / "reversed.pt"
    torch.save(dict(reversed(list(state.items()))), shuffled)
    bare = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "image_weights": ""}))
    load_image_tower(bare.model, str(shuffled))
    assert all(torch.equal(v, state[k]) for k, v in bare.model.visual.state_dict().items())

    weights.write_bytes(weights.read_bytes()[:-1])
    check = by_name(job_checks(cfg))["model.image_weights"]
    assert check.status == "fail" and "lit models prepare" in check.fix


def test_wrong_weights_pooling_or_preprocessing_fail_naming_the_key(timm_offline: Sources, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    original = timm_tower.reference

    def damaged(*args: object, **kwargs: object) -> tuple:
        state, pil, x, f = original(*args, **kwargs)  # type: ignore[arg-type]
        key = next(k for k in state if k.endswith("stages.1.blocks.0.conv_dw.weight"))
        state[key] = state[key] + 0.05 * torch.randn_like(state[key])
        return state, pil, x, f

    path, cfg = write_job(tmp_path, timm_job_model(tmp_path))
    monkeypatch.setattr(timm_tower, "reference", damaged)
    with pytest.raises(ConfigError) as info:
        prepare_models(cfg, job=str(path), cache_dir=str(timm_offline.cache))
    assert info.value.key == "model.config.vision_cfg" and "timm's own pretrained" in str(info.value)
    assert info.value.source == str(path) and "max |difference|" in str(info.value)
    monkeypatch.setattr(timm_tower, "reference", original)
    assert not Path(cfg.model.image_weights).exists()

    path, cfg = write_job(tmp_path, timm_job_model(tmp_path, vision={"timm_pool": "max"}))
    with pytest.raises(ConfigError) as info:
        prepare_models(cfg, job=str(path), cache_dir=str(timm_offline.cache))
    assert info.value.key == "model.config.vision_cfg" and "timm_pool" in str(info.value)

    model = timm_job_model(tmp_path)
    del model["config"]["preprocess_cfg"]  # open_clip's default mean/std (OpenAI's), not the tag's 0.5
    path, cfg = write_job(tmp_path, model)
    with pytest.raises(ConfigError) as info:
        prepare_models(cfg, job=str(path), cache_dir=str(timm_offline.cache))
    assert info.value.key == "model.config.preprocess_cfg" and "0.5" in str(info.value)
    assert not Path(cfg.model.image_weights).exists()


def test_timm_mistakes_a_user_can_fix_are_config_errors(timm_offline: Sources, tmp_path: Path) -> None:
    cases: list[tuple[dict, str, str]] = [
        ({"image_pretrained": "timm:convnxt_base.fb_in22k_ft_in1k"}, "model.image_pretrained", "did you mean convnext_base"),
        ({"image_pretrained": f"timm:{TIMM_MODEL}.nope"}, "model.image_pretrained", f"its tags: {TIMM_MODEL}.{TIMM_TAG}"),
        ({"image_pretrained": "timm:resnet10t.c3_in1k"}, "model.config.vision_cfg.timm_model_name", "timm_model_name: resnet10t"),
        ({"vision": {"timm_model_name": f"{TIMM_MODEL}.other"}}, "model.config.vision_cfg.timm_model_name", "is 'test_convnext.other'"),
        ({"vision": {"timm_model_pretrained": True}}, "model.config.vision_cfg.timm_model_pretrained", "at run time"),
        ({"vision": {"timm_proj": "linear"}}, "model.config.vision_cfg.timm_proj", "initialized at random and frozen"),
        ({"vision": {"timm_pool": "abs_attn"}}, "model.config.vision_cfg.timm_pool", "initialized at random and frozen"),
        ({"config": {"embed_dim": 32}}, "model.config.embed_dim", f"set embed_dim: {TIMM_FEATURES}"),
        ({"vision": {"image_size": 224}}, "model.config.vision_cfg.image_size", "set image_size: 160"),
        ({"image_pretrained": "timm:test_resnet.r160_in1k", "vision": {"timm_model_name": "test_resnet"}, "config": {"embed_dim": 96}},
         "model.image_pretrained", "timm.create_model(pretrained=True) failed"),  # a real tag, not in the offline cache
    ]
    no_proj = timm_job_model(tmp_path)
    del no_proj["config"]["vision_cfg"]["timm_proj"]  # open_clip's default is a linear projection
    for changes, key, words in cases + [({"_model": no_proj}, "model.config.vision_cfg.timm_proj", "(open_clip's default)")]:
        model = changes.pop("_model", None) or timm_job_model(tmp_path, **changes)
        path, cfg = write_job(tmp_path, model)
        with pytest.raises(ConfigError) as info:
            prepare_models(cfg, job=str(path), cache_dir=str(timm_offline.cache))
        assert info.value.key == key and words in str(info.value) and info.value.source == str(path), (changes, str(info.value))
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_trainable_projection_is_written_with_the_tower_and_loads_by_name(timm_offline: Sources, tmp_path: Path) -> None:
    model = timm_job_model(tmp_path, vision={"timm_proj": "linear"}, config={"embed_dim": 32}, unlocked_groups=1)
    path, cfg = write_job(tmp_path, model, data={"image_source": "raw"})
    prepared = prepare_models(cfg, job=str(path), cache_dir=str(timm_offline.cache), images=2)
    assert prepared.feature_diff is not None and prepared.feature_diff <= 1e-5
    state = torch.load(cfg.model.image_weights, weights_only=True)
    assert {k for k in state if not k.startswith("trunk.")} == {"head.proj.weight"}
    built = build_model(cfg.model, seed=5)  # another seed: the head still comes from the file
    assert torch.equal(built.model.visual.head.proj.weight, state["head.proj.weight"])
    assert built.model.visual.head.proj.weight.requires_grad and not image_tower_locked(built.model)


def test_a_sweep_file_prepares_every_members_towers_and_the_shared_text_tower_once(
        timm_offline: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from lit.cli import main
    from lit.log import console
    from tests.models.conftest import TIMM_PREPROCESS, TIMM_VISION

    monkeypatch.setattr(console, "width", 400)
    path, cfg = write_job(tmp_path)  # the open_clip tiny tower and the text tower
    timm_weights = tmp_path / "models" / "convnext-visual.pt"
    sweep = tmp_path / "sweeps" / "towers.yaml"
    sweep.parent.mkdir()
    sweep.write_text(yaml.safe_dump({"job": "../job.yaml", "members": [
        {"name": "vit", "overrides": []},
        {"name": "convnext", "overrides": [
            f"model.image_pretrained={LABEL}", f"model.image_weights={timm_weights}", f"model.config.embed_dim={TIMM_FEATURES}",
            "model.config.quick_gelu=false", f"model.config.vision_cfg={TIMM_VISION}", f"model.config.preprocess_cfg={TIMM_PREPROCESS}"]},
    ]}))
    with console.capture() as captured:
        assert main(["models", "prepare", str(sweep), "--cache-dir", str(timm_offline.cache), "--images", "2"]) == 0
    text = captured.get()
    assert f"{sweep} --member convnext" in text and "equal timm's own" in text and "equal open_clip's own" in text
    assert text.count("SHA256SUMS") == 2  # the text row and the sums-file column of the first member only
    assert sums_path(cfg.model.image_weights).is_file() and sums_path(timm_weights).is_file()
    with console.capture():
        assert main(["models", "verify", str(sweep)]) == 0
        assert main(["models", "verify", str(sweep), "--member", "nope"]) == 2
    timm_weights.write_bytes(b"")
    with console.capture():
        assert main(["models", "verify", str(sweep), "--member", "vit"]) == 0
        assert main(["models", "verify", str(sweep), "--member", "convnext"]) == 1
