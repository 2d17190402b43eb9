"""Finding photos, opening them safely (EXIF, broken files, decompression bombs), preprocessing like open_clip, loading in workers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lit.data.toy import ClassStyle, draw_image, jpeg_bytes
from lit.serve.images import BadImage, Preprocessing, discover, open_image
from lit.serve.inputs import image_loader


def photo(path: Path, size: tuple[int, int] = (40, 30), index: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(draw_image(ClassStyle.of(index), np.random.default_rng(index), *size)))
    return path


def test_discover_folders_lists_and_missing_files(tmp_path: Path) -> None:
    a = photo(tmp_path / "trip" / "day1" / "a.JPG")
    b = photo(tmp_path / "trip" / "b.png")
    (tmp_path / "trip" / "notes.md").write_text("not an image type: not picked from a folder")
    c = photo(tmp_path / "elsewhere" / "c.jpeg")
    listing = tmp_path / "lists" / "paths.txt"
    listing.parent.mkdir()
    listing.write_text(f"# one path a line\n../elsewhere/c.jpeg\n\n{a}\n../missing.jpg\n")
    stray = tmp_path / "stray.json"
    stray.write_text("{}")
    found, skipped = discover([tmp_path / "trip", listing, stray, tmp_path / "nowhere"])
    assert [p.resolve() for p in found] == [b, a, c, stray]  # folder sorted (b.png before day1/), a listed again only once, any named file tried
    assert [(Path(s.path).name, s.reason.split()[0]) for s in skipped] == [("missing.jpg", "listed"), ("nowhere", "no")]


def test_open_image_applies_exif_orientation(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    opened = open_image(buf.getvalue())
    assert opened.size == (20, 60) and opened.mode == "RGB"
    top = np.asarray(opened)[:5].mean(axis=(0, 1))
    assert top[2] > 200 and top[0] < 60  # the left band is now at the top


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_open_image_refuses_what_is_not_an_image(data: bytes) -> None:
    with pytest.raises(BadImage, match="not a readable image"):
        open_image(data)


def test_open_image_refuses_a_truncated_jpeg(tmp_path: Path) -> None:
    data = photo(tmp_path / "x.jpg", (200, 150)).read_bytes()
    with pytest.raises(BadImage, match="not a readable image"):
        open_image(data[: len(data) // 2])


def test_decompression_bombs_are_refused() -> None:
    buf = io.BytesIO()
    Image.new("1", (3000, 2000)).save(buf, "PNG")  # 6 megapixels in a few kB
    with pytest.raises(BadImage, match="decompression bomb"):
        open_image(buf.getvalue(), max_pixels=1_000_000)
    assert open_image(buf.getvalue(), max_pixels=10_000_000).size == (3000, 2000)
    huge = io.BytesIO()
    Image.new("1", (15000, 15000)).save(huge, "PNG")  # 225 MP: PIL's own DecompressionBombError, whatever our limit
    with pytest.raises(BadImage, match="decompression bomb"):
        open_image(huge.getvalue(), max_pixels=10**12)


@pytest.mark.parametrize("mode", ["shortest", "squash"])
@pytest.mark.parametrize("size", [(48, 48), (100, 37), (37, 100), (641, 480)])
def test_numpy_preprocessing_is_open_clips(mode: str, size: tuple[int, int]) -> None:
    cfg = {"size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": mode}
    theirs = open_clip.image_transform(224, is_train=False, mean=cfg["mean"], std=cfg["std"], interpolation="bicubic",
                                       resize_mode=mode)
    image = draw_image(ClassStyle.of(5), np.random.default_rng(1), *size)
    ours = Preprocessing.of(cfg)(image)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs(image).numpy(), atol=1e-6, rtol=0)


def test_unsupported_preprocessing_is_a_config_error() -> None:
    from lit.configlib import ConfigError

    with pytest.raises(ConfigError, match="longest"):
        Preprocessing.of({"size": 224, "mean": (0,) * 3, "std": (1,) * 3, "resize_mode": "longest"})


def test_loader_passes_bad_files_as_markers_in_order(tmp_path: Path) -> None:
    good = [photo(tmp_path / f"{i}.jpg", index=i) for i in range(5)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 broken")
    paths = [good[0], bad, *good[1:]]
    pre = Preprocessing.of({"size": 16, "mean": (0.5,) * 3, "std": (0.5,) * 3})
    batches = list(image_loader(paths, lambda im: torch.from_numpy(pre(im)), batch_size=4, workers=2))
    assert [b.indices for b in batches] == [[0, 2, 3], [4, 5]]
    assert [i for b in batches for i, _ in b.bad] == [1] and "not a readable image" in batches[0].bad[0][1]
    assert batches[0].images is not None and tuple(batches[0].images.shape) == (3, 3, 16, 16)
