"""The engine's promises: frozen tower untouched, trimmed text exact, cache equals raw, ranks equal one rank, export loads."""

from __future__ import annotations

import os
from pathlib import Path

import open_clip
import pytest
import torch
import torch.multiprocessing as mp

from launcher.submit import free_port
from lit import dist
from lit.checkpoint import model_from_checkpoint
from lit.config import ModelConfig
from lit.configlib import ConfigError
from lit.data.embed import embed_folder
from lit.data.folders import open_folder
from lit.data.loader import Stream, eval_pipeline
from lit.field.open_clip_export import WEIGHTS_NAME, export
from lit.model import build_model, pad_id, trim_supported, trim_tokens
from lit.train.loop import LiTForward, Trainer
from lit.train.run import epoch_batches, run
from tests.conftest import tiny_config

CAPTIONS = [
    "A photo of the Buff-tailed Coronet Birds Boissonneaua flavescens",
    "A photo of the Oakmoss Fungi Evernia prunastri",
    "a crab",
]


def test_training_changes_the_text_side_and_never_the_image_tower(engine_data: dict, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data)
    built = build_model(cfg.model, seed=cfg.train.seed)
    info = dist.resolve({})
    trainer = Trainer(cfg, built, info, torch.device("cpu"), total_steps=6)
    visual_before = {k: v.clone() for k, v in built.model.visual.state_dict().items()}
    text_before = {k: v.clone() for k, v in built.model.text.state_dict().items()}
    batches = epoch_batches(cfg, built, open_folder(engine_data["train"], "t"), info, epoch=0, skip=0)
    for _ in range(6):
        out = trainer.train_step([next(batches)])
    assert torch.isfinite(torch.tensor(out["loss"]))
    for k, v in built.model.visual.state_dict().items():
        assert torch.equal(v, visual_before[k]), f"image tower tensor {k} changed"
    assert any(not torch.equal(v, text_before[k]) for k, v in built.model.text.state_dict().items())
    trainable = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trainable for p in built.model.visual.parameters())


@pytest.mark.parametrize("model_cfg", [ModelConfig(name="lit-tiny", image_weights=""), ModelConfig()], ids=["causal-clip", "hf-minilm"])
def test_trimmed_text_gives_the_same_embeddings(model_cfg: ModelConfig) -> None:
    built = build_model(model_cfg)
    model = built.model.eval()
    assert trim_supported(model)
    tokens = built.tokenizer(CAPTIONS)
    trimmed = trim_tokens(tokens, pad_id(model))
    assert trimmed.shape[1] < tokens.shape[1]
    forward = LiTForward(model, cached=True)
    images = torch.randn(len(CAPTIONS), built.model_cfg["embed_dim"])
    with torch.no_grad():
        _, padded_f, _ = forward(images, tokens)
        _, trimmed_f, _ = forward(images, trimmed)
    torch.testing.assert_close(trimmed_f, padded_f, rtol=1e-5, atol=1e-5)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_cached_path_equals_raw_path(engine_data: dict, tmp_path: Path, loss: str) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data, ["data.augment=false", f"train.loss={loss}"])
    embed_folder(cfg, engine_data["train"], tmp_path / "emb", batch_size=16, dtype="float32", device="cpu")
    built = build_model(cfg.model, seed=cfg.train.seed, loss=loss)
    raw = open_folder(engine_data["train"], "t")
    cached = open_folder(tmp_path / "emb", "t", "lit embed")
    assert cached.samples == raw.samples
    raw_batch = next(iter(eval_pipeline(Stream(raw.urls, False, built.preprocess_val, built.tokenizer), rank=0, world=1, batch_size=16)))
    emb_batch = next(iter(eval_pipeline(Stream(cached.urls, True, None, built.tokenizer), rank=0, world=1, batch_size=16)))
    assert raw_batch["keys"] == emb_batch["keys"]
    trainer = Trainer(cfg, built, dist.resolve({}), torch.device("cpu"), total_steps=10)
    results = []
    for batch, is_cached in ((raw_batch, False), (emb_batch, True)):
        built.model.zero_grad(set_to_none=True)
        trainer.train_mode()
        outputs = LiTForward(built.model, cached=is_cached, with_bias=trainer.sigmoid)(batch["images"], trainer.prepare_tokens(batch["tokens"]))
        value = trainer.loss_fn(*outputs)
        value.backward()
        results.append((value.detach(), _grads(built.model)))
    (raw_loss, raw_grads), (cached_loss, cached_grads) = results
    torch.testing.assert_close(cached_loss, raw_loss, rtol=1e-5, atol=1e-6)
    assert raw_grads.keys() == cached_grads.keys() and raw_grads
    for k in raw_grads:
        torch.testing.assert_close(cached_grads[k], raw_grads[k], rtol=1e-4, atol=1e-6)
    assert ("logit_bias" in raw_grads) == (loss == "siglip")  # the sigmoid loss trains its bias


def test_a_cache_from_another_tower_is_refused(engine_data: dict, tmp_path: Path) -> None:
    maker = tiny_config(tmp_path / "a", engine_data, ["data.augment=false"])
    embed_folder(maker, engine_data["train"], tmp_path / "emb", batch_size=32, device="cpu")
    # Another seed draws another random tiny image tower: its fingerprint differs.
    other = tiny_config(tmp_path / "b", engine_data, [
        "data.augment=false", "data.image_source=cached", f"data.train_embeddings={tmp_path / 'emb'}", "train.seed=1"])
    with pytest.raises(ConfigError, match="lit embed"):
        run(other)
    unlocked = tiny_config(tmp_path / "c", engine_data, ["model.lock_image=false"])
    with pytest.raises(ConfigError, match="locked image tower"):
        embed_folder(unlocked, engine_data["train"], tmp_path / "emb2", device="cpu")


def _loss_and_grads(world: int, rank: int, images: torch.Tensor, tokens: torch.Tensor, data: dict, run_dir: str,
                    loss: str = "clip") -> tuple:
    cfg = tiny_config(Path(run_dir), data, ["train.gather_with_grad=true", f"train.loss={loss}"])
    info = dist.resolve()
    built = build_model(cfg.model, seed=0, loss=loss)
    trainer = Trainer(cfg, built, info, torch.device("cpu"), total_steps=10)
    share = images.shape[0] // world
    part = slice(rank * share, (rank + 1) * share)
    out = trainer.train_step([{"images": images[part], "tokens": tokens[part], "labels": torch.zeros(share)}])
    return torch.tensor(out["loss"]), _grads(built.model)  # the logged loss; the gradients the step took (no clipping)


def _rank_main(rank: int, port: int, images: torch.Tensor, tokens: torch.Tensor, data: dict, run_dir: str, out: dict,
               loss: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = dist.resolve()
    dist.init(info, torch.device("cpu"))
    out[rank] = _loss_and_grads(2, rank, images, tokens, data, run_dir, loss)
    dist.shutdown()


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_gloo_ranks_equal_one_rank_on_the_whole_batch(engine_data: dict, tmp_path: Path, loss: str) -> None:
    """One training step. CLIP (gathered features): every rank's loss is the global one. SigLIP (open_clip's neighbour
    exchange): each rank's loss is its images' share and the step logs their mean. Either way DDP's averaged gradients
    are one rank's, the logit bias's included."""
    built = build_model(ModelConfig(name="lit-tiny", image_weights=""))
    torch.manual_seed(3)
    images = torch.randn(8, 3, 32, 32)
    tokens = built.tokenizer([f"A photo of the species number {i}" for i in range(8)])
    one_loss, one_grads = _loss_and_grads(1, 0, images, tokens, engine_data, str(tmp_path), loss)
    out = mp.Manager().dict()
    mp.spawn(_rank_main, args=(free_port(), images, tokens, engine_data, str(tmp_path), out, loss), nprocs=2, join=True)
    assert ("logit_bias" in one_grads) == (loss == "siglip")
    for rank in (0, 1):
        value, grads = out[rank]
        torch.testing.assert_close(value, one_loss, rtol=1e-5, atol=1e-6)
        assert grads.keys() == one_grads.keys()
        for k in grads:
            torch.testing.assert_close(grads[k], one_grads[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("overrides", [
    ["model.name=lit-tiny", "model.image_weights="],
    [],  # the embedded default: frozen EfficientNet-Lite0 + MiniLM (HF text tower)
    ["model.name=lit-tiny", "model.image_weights=", "train.loss=siglip"],  # its trained logit bias goes with it
], ids=["native-text", "hf-text", "native-text-siglip"])
def test_export_loads_in_plain_open_clip_with_identical_embeddings(engine_data: dict, tmp_path: Path, overrides: list[str]) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data, ["train.epochs=1", "data.samples_per_epoch=16", "data.batch_size=4", *overrides])
    if overrides == []:
        from lit.config import with_overrides

        cfg = with_overrides(cfg, ["model.name=lit-effnet-lite0-minilm", "model.image_weights=pkg:efficientnet-lite0"])
    assert run(cfg) == 0
    saved, ours, _ = model_from_checkpoint(cfg.run_dir)
    out = export(cfg.run_dir, tmp_path / "export")
    assert (out / WEIGHTS_NAME).is_file()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    model.eval()
    size = ours.model.visual.preprocess_cfg["size"]
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokenizer(CAPTIONS)), ours.model.encode_text(ours.tokenizer(CAPTIONS)), rtol=0, atol=1e-6)
        # Frozen batch norm (ours) and plain eval-mode batch norm round differently: float tolerance.
        torch.testing.assert_close(model.encode_image(images), ours.model.encode_image(images), rtol=1e-5, atol=1e-5)
    from PIL import Image

    photo = Image.fromarray((torch.rand(90, 120, 3) * 255).to(torch.uint8).numpy())
    torch.testing.assert_close(preprocess(photo), ours.preprocess_val(photo), rtol=0, atol=0)
    assert torch.equal(model.logit_scale, ours.model.logit_scale)
    if saved.train.loss == "siglip":
        assert model.logit_bias is not None and torch.equal(model.logit_bias, ours.model.logit_bias)
        assert float(ours.model.logit_bias.detach()) != -10.0  # trained, not the initial value
    else:
        assert model.logit_bias is None


@pytest.mark.parametrize("precision", ["amp_bf16", "amp_fp16"])
def test_mixed_precision_steps_train(engine_data: dict, tmp_path: Path, precision: str) -> None:
    cfg = tiny_config(tmp_path / "run", engine_data, [f"train.precision={precision}", "train.grad_clip=1.0", "train.accum_steps=2"])
    built = build_model(cfg.model, seed=cfg.train.seed)
    trainer = Trainer(cfg, built, dist.resolve({}), torch.device("cpu"), total_steps=4)
    assert trainer.scaler.is_enabled() == (precision == "amp_fp16")
    batches = epoch_batches(cfg, built, open_folder(engine_data["train"], "t"), dist.resolve({}), epoch=0, skip=0)
    before = {k: v.clone() for k, v in built.model.text.state_dict().items()}
    losses = [trainer.train_step([next(batches), next(batches)]) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(o["loss"])) and o["grad_norm"] > 0 for o in losses)
    assert any(not torch.equal(v, before[k]) for k, v in built.model.text.state_dict().items())
