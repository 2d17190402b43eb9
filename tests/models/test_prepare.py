"""`lit models prepare` end to end, offline: real open_clip / huggingface_hub downloads from a local cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from lit.config import ConfigError, load_config
from lit.doctor import job_checks, ok
from lit.model import build_model, clip_api
from lit.models.prepare import prepare_models
from lit.models.samples import generated_images
from lit.models.verify import TEXT_SOURCE, TEXT_SUMS, read_source, read_sums, sha256_file, source_path, sums_path
from tests.models.conftest import MODEL, TAG, TEXT_REPO, Sources, job_model, write_job

pytestmark = pytest.mark.timeout(120)


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".lit-prepare-" in p.name or ".lit-old-" in p.name) if folder.is_dir() else []


def test_prepare_writes_towers_and_sums_and_the_preflight_passes(offline: Sources, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    path, cfg = write_job(tmp_path)
    prepared = prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    assert [w.tower for w in prepared.written] == ["text", "image"]

    weights = Path(cfg.model.image_weights)
    assert read_sums(sums_path(weights)) == {weights.name: sha256_file(weights)}
    source = read_source(source_path(weights))
    assert source is not None and source["pretrained"] == f"{MODEL}/{TAG}" and source["quick_gelu"] is True
    # the file is model.visual's state dict: the checkpoint's visual.* tensors with the prefix stripped
    checkpoint = load_file(str(offline.checkpoint))
    state = torch.load(weights, weights_only=True)
    assert set(state) == {k.removeprefix("visual.") for k in checkpoint if k.startswith("visual.")}
    assert all(torch.equal(state[k], checkpoint[f"visual.{k}"]) for k in state)

    folder = tmp_path / "models" / "minilm"
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "1_Pooling/config.json", TEXT_SUMS, TEXT_SOURCE} <= names
    assert ".gitattributes" not in names and not any(p.is_symlink() for p in folder.rglob("*"))  # bytes, no links into the cache
    assert set(read_sums(folder / TEXT_SUMS)) == names - {TEXT_SUMS}
    assert read_source(folder / TEXT_SOURCE) == {"repo_id": TEXT_REPO, "revision": "2" * 40, "prepared_by": "lit models prepare"}
    if shutil.which("sha256sum"):  # the sums are plain sha256sum files
        subprocess.run(["sha256sum", "-c", "--quiet", TEXT_SUMS], cwd=folder, check=True)
        subprocess.run(["sha256sum", "-c", "--quiet", sums_path(weights).name], cwd=weights.parent, check=True)
    assert leftovers(folder.parent) == []

    checks = job_checks(cfg)
    assert ok(checks) and not [c for c in checks if c.status == "warn"], checks
    named = by_name(checks)
    assert "sha256 ok" in named["model.image_weights"].detail and named["model.config.quick_gelu"].status == "ok"
    assert "sha256 ok" in named["model.config.text_cfg.hf_model_name"].detail

    # a second run replaces what the first wrote (no --force needed) and gives the same bytes
    again = prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    assert [w.sha256 for w in again.written] == [w.sha256 for w in prepared.written]


def test_the_prepared_tower_computes_open_clips_own_features(offline: Sources, tmp_path: Path) -> None:
    import open_clip

    path, cfg = write_job(tmp_path)
    prepared = prepare_models(cfg, job=str(path), cache_dir=str(offline.cache), images=3)
    assert prepared.feature_diff is not None and prepared.feature_diff < 1e-5 and prepared.images == 3

    built = build_model(cfg.model)  # what the job's training and `lit embed` build, from the prepared files only
    reference, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=TAG, cache_dir=str(offline.cache),
                                                                     force_quick_gelu=True)
    images = torch.stack([preprocess(im) for im in generated_images(4, 32, seed=7)])
    assert torch.equal(images, torch.stack([built.preprocess_val(im) for im in generated_images(4, 32, seed=7)]))
    with torch.no_grad():
        ours = clip_api(built.model.eval()).encode_image(images)
        theirs = clip_api(reference.eval()).encode_image(images)
        with pytest.warns(UserWarning, match="QuickGELU mismatch"):  # open_clip only warns about a wrong activation
            gelu = open_clip.create_model(MODEL, pretrained=TAG, cache_dir=str(offline.cache)).eval()
        plain = clip_api(gelu).encode_image(images)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert (plain - theirs).abs().max() > 1e-3  # the comparison would see a wrong activation


def test_a_config_without_quick_gelu_is_refused_and_nothing_is_written(offline: Sources, tmp_path: Path) -> None:
    model = job_model(tmp_path)
    del model["config"]["quick_gelu"]
    path, cfg = write_job(tmp_path, model)
    with pytest.raises(ConfigError) as info:
        prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    err = info.value
    assert err.key == "model.config.quick_gelu" and err.source == str(path)
    assert "QuickGELU" in str(err) and "quick_gelu: true" in str(err) and f"lit models prepare {path}" in str(err)
    assert not Path(cfg.model.image_weights).exists() and not (tmp_path / "models" / "minilm").exists()
    assert leftovers(tmp_path / "models") == []


def test_the_preflight_fails_a_damaged_or_missing_file_with_the_command_to_run(offline: Sources, tmp_path: Path) -> None:
    path, cfg = write_job(tmp_path)
    prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    weights = Path(cfg.model.image_weights)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    tokenizer = tmp_path / "models" / "minilm" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:1000])

    failed = by_name([c for c in job_checks(cfg) if c.status == "fail"])
    assert set(failed) == {"model.image_weights", "model.config.text_cfg.hf_model_name"}
    assert "damaged" in failed["model.image_weights"].detail
    assert "tokenizer.json (sha256 differs)" in failed["model.config.text_cfg.hf_model_name"].detail
    assert all("lit models prepare JOB.yaml" in c.fix for c in failed.values())

    weights.unlink()
    (tmp_path / "models" / "minilm" / "vocab.txt").unlink()
    failed = by_name([c for c in job_checks(cfg) if c.status == "fail"])
    assert "does not exist" in failed["model.image_weights"].detail and "lit models prepare" in failed["model.image_weights"].fix
    assert "vocab.txt (missing)" in failed["model.config.text_cfg.hf_model_name"].detail


def test_the_preflight_fails_weights_of_another_activation_or_source(offline: Sources, tmp_path: Path) -> None:
    path, cfg = write_job(tmp_path)
    prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    gelu = load_config(path, ["model.config.quick_gelu=false"])
    check = by_name(job_checks(gelu))["model.config.quick_gelu"]
    assert check.status == "fail" and "model.config.quick_gelu" in check.detail and "quick_gelu: true" in check.fix
    other = load_config(path, ["model.image_pretrained=ViT-L-14/openai"])
    check = by_name(job_checks(other))["model.image_weights"]
    assert check.status == "fail" and f"{MODEL}/{TAG}" in check.detail and "lit models prepare" in check.fix


def test_a_wrong_tower_shape_or_preprocessing_is_refused_naming_the_key(offline: Sources, tmp_path: Path) -> None:
    wide = job_model(tmp_path, config={"vision_cfg": {**job_model(tmp_path)["config"]["vision_cfg"], "width": 48}})
    path, cfg = write_job(tmp_path, wide)
    with pytest.raises(ConfigError) as info:
        prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    assert info.value.key == "model.config.vision_cfg" and "conv1.weight: job (48, 3, 8, 8) vs checkpoint (32, 3, 8, 8)" in str(info.value)

    other = job_model(tmp_path, config={"preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}})
    path, cfg = write_job(tmp_path, other)
    with pytest.raises(ConfigError) as info:
        prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    assert info.value.key == "model.config.preprocess_cfg" and "0.48145466" in str(info.value)
    assert not Path(cfg.model.image_weights).exists() and leftovers(tmp_path / "models") == []


def test_mistakes_a_user_can_fix_are_config_errors(offline: Sources, tmp_path: Path) -> None:
    cases = [
        ({"image_pretrained": f"{MODEL}/nope"}, "model.image_pretrained", "its tags: tiny"),
        ({"image_pretrained": "ViT-L-14"}, "model.image_pretrained", "is not NAME/TAG"),
        ({"image_pretrained": "no-such-net/openai"}, "model.image_pretrained", "not an open_clip model"),
        ({"image_weights": "pkg:efficientnet-lite0"}, "model.image_weights", "must be the local file"),
        ({"text_pretrained": "nobody/not-in-the-cache"}, "model.text_pretrained", "snapshot_download failed"),
        ({"image_pretrained": None, "text_pretrained": None}, "model.image_pretrained", "nothing to prepare"),
        ({"text_pretrained": None}, "model.config.text_cfg.hf_model_name", "model.text_pretrained is empty"),
    ]
    for changes, key, words in cases:
        path, cfg = write_job(tmp_path, job_model(tmp_path, **changes))
        with pytest.raises(ConfigError) as info:
            prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
        assert info.value.key == key and words in str(info.value), (changes, str(info.value))

    (tmp_path / "a-file").write_text("")
    path, cfg = write_job(tmp_path, job_model(tmp_path, image_weights=str(tmp_path / "a-file" / "visual.pt")))
    with pytest.raises(ConfigError, match="cannot write beside") as info:
        prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    assert info.value.key == "model.image_weights" and leftovers(tmp_path / "models") == []

    # a file that `prepare` did not write is not replaced without --force
    path, cfg = write_job(tmp_path)
    weights = Path(cfg.model.image_weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"my own weights")
    with pytest.raises(ConfigError, match="--force") as info:
        prepare_models(cfg, job=str(path), cache_dir=str(offline.cache))
    assert info.value.key == "model.image_weights" and weights.read_bytes() == b"my own weights"
    prepare_models(cfg, job=str(path), cache_dir=str(offline.cache), force=True)
    assert ok(job_checks(cfg))


def test_the_cli_prepares_and_verifies(offline: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lit.cli import main
    from lit.log import console

    monkeypatch.setattr(console, "width", 400)  # the table in one line per row

    path, cfg = write_job(tmp_path)
    with console.capture() as captured:
        assert main(["models", "prepare", str(path), "--cache-dir", str(offline.cache), "--images", "2"]) == 0
    text = captured.get()
    weights = Path(cfg.model.image_weights)
    assert sha256_file(weights) in text and "tiny-visual.pt" in text and "equal open_clip's own" in text
    with console.capture():
        assert main(["models", "verify", str(path)]) == 0
    weights.write_bytes(b"")
    with console.capture() as captured:
        assert main(["models", "verify", str(path)]) == 1
    assert "lit models prepare" in captured.get()
    with console.capture() as captured:
        assert main(["models", "prepare", str(path), "model.config.quick_gelu=false", "--cache-dir", str(offline.cache)]) == 2
    assert "model.config.quick_gelu" in captured.get()


def test_only_the_text_tower_can_be_prepared(offline: Sources, tmp_path: Path) -> None:
    path, cfg = write_job(tmp_path, job_model(tmp_path, image_pretrained=None, image_weights=""))
    lines: list[str] = []
    prepared = prepare_models(cfg, job=str(path), cache_dir=str(offline.cache), log=lines.append)
    assert [w.tower for w in prepared.written] == ["text"] and prepared.feature_diff is None
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == [f"[{i}/5" for i in range(1, 6)]
    assert ok(job_checks(cfg))
