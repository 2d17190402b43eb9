"""Finding photos, opening them safely (EXIF, broken files, broken links, decompression bombs), preprocessing like open_clip
(also for 1 x N images, in bounded memory), loading in workers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lit.data.toy import ClassStyle, draw_image, jpeg_bytes
from lit.field.images import MAX_ASPECT, BadImage, Preprocessing, discover, open_image
from lit.field.inputs import image_loader
from lit.field.torch_model import BoundedTransform


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


def test_broken_links_in_folders_are_skipped_with_the_reason(tmp_path: Path) -> None:
    a = photo(tmp_path / "trip" / "a.jpg")
    (tmp_path / "trip" / "gone.jpg").symlink_to(tmp_path / "trip" / "deleted.jpg")  # the target was removed
    (tmp_path / "trip" / "loop.png").symlink_to(tmp_path / "trip" / "loop.png")
    (tmp_path / "trip" / "notes.txt").symlink_to(tmp_path / "nowhere.txt")  # not an image type: not picked from a folder
    (tmp_path / "trip" / "folder.jpg").mkdir()  # a folder named like an image is searched, not skipped
    b = photo(tmp_path / "trip" / "folder.jpg" / "b.jpg")
    found, skipped = discover([tmp_path / "trip", tmp_path / "trip" / "gone.jpg"])
    assert [p.resolve() for p in found] == [a, b]
    assert [Path(s.path).name for s in skipped] == ["gone.jpg", "loop.png", "gone.jpg"]  # named again: listed again
    assert all(s.reason.startswith("a broken link") for s in skipped) and "deleted.jpg" in skipped[0].reason


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


CFG = {"size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "shortest"}
LEVEL = 1 / 255 / 0.5 + 1e-6
"""One 8-bit level after normalizing with std 0.5."""


def open_clips(cfg: dict) -> torch.nn.Module:
    """open_clip's own eval transform: resize the whole image, then crop (the reference)."""
    return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                     interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random pixels: the hardest case for resampling (every intermediate rounding and clipping shows)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("cfg", [CFG, {**CFG, "interpolation": "bilinear"}, {**CFG, "size": 32}, {**CFG, "resize_mode": "squash"}],
                         ids=["bicubic", "bilinear", "size-32", "squash"])
@pytest.mark.parametrize("size", [(7, 300), (300, 7), (33, 1000), (1000, 33), (41, 200), (3, 500)])
def test_extreme_aspect_ratios_stay_within_a_level_of_the_full_resize(cfg: dict, size: tuple[int, int]) -> None:
    """Beyond MAX_ASPECT only the cropped window is resampled: within one 8-bit level of resize-then-crop, rarely off."""
    assert max(size) > MAX_ASPECT * min(size)
    pre, theirs = Preprocessing.of(cfg), open_clips(cfg)
    for image in (noise(size), draw_image(ClassStyle.of(3), np.random.default_rng(1), *size)):
        ours, full = pre(image), theirs(image).numpy()
        assert ours.shape == full.shape == (3, cfg["size"], cfg["size"])
        off = np.abs(ours - full)
        assert off.max() <= LEVEL and (off > 1e-6).mean() < 0.03, (off.max() * 127.5, (off > 1e-6).mean())


@pytest.mark.parametrize("size", [(1, 4000), (4000, 1), (1, 30000), (30000, 1), (5, 20000)])
def test_thin_images_are_preprocessed_in_bounded_memory(size: tuple[int, int]) -> None:
    """A 1 x 4000 image resized short side first is 224 x 896,000 (800 MB in PIL); cropping first holds almost nothing."""
    clear_refs, status = Path("/proc/self/clear_refs"), Path("/proc/self/status")
    if not clear_refs.exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    image = noise(size)
    pre = Preprocessing.of(CFG)

    def kib(key: str) -> int:
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith(key + ":"))

    clear_refs.write_text("5")  # the peak RSS (VmHWM) starts again from the current RSS
    before = kib("VmRSS")
    out = pre(image)
    grown = kib("VmHWM") - before
    assert out.shape == (3, 224, 224) and grown < 40 * 1024, f"preprocessing {size} grew the peak RSS by {grown / 1024:.0f} MB"


def test_a_thin_image_is_what_the_full_path_gives_at_a_size_it_can_afford() -> None:
    """1 x 4000 at size 32: the full resize holds 32 x 128,000 pixels (16 MB), affordable here to compare."""
    cfg = {**CFG, "size": 32}
    image = noise((1, 4000), seed=2)
    off = np.abs(Preprocessing.of(cfg)(image) - open_clips(cfg)(image).numpy())
    assert off.max() <= LEVEL and (off > 1e-6).mean() < 0.03


@pytest.mark.parametrize("size", [(48, 48), (100, 37), (37, 100), (641, 480), (160, 40), (40, 160)])
def test_the_torch_transform_is_open_clips_exactly_up_to_the_bound(size: tuple[int, int]) -> None:
    """The checkpoint's preprocessing (reduce, then open_clip's transform) is open_clip's own, bit for bit, up to 4:1."""
    theirs = open_clips(CFG)
    bounded = BoundedTransform(theirs, Preprocessing.of(CFG))
    image = draw_image(ClassStyle.of(5), np.random.default_rng(1), *size)
    assert torch.equal(bounded(image), theirs(image))
    np.testing.assert_allclose(Preprocessing.of(CFG)(image), bounded(image).numpy(), atol=1e-6, rtol=0)


def test_the_torch_transform_of_thin_images_is_the_numpy_one() -> None:
    theirs = open_clips(CFG)
    bounded = BoundedTransform(theirs, Preprocessing.of(CFG))
    image = noise((2, 30000), seed=3)
    np.testing.assert_allclose(bounded(image).numpy(), Preprocessing.of(CFG)(image), atol=1e-6, rtol=0)


def test_a_preprocessing_without_reduction_refuses_extreme_aspect_ratios() -> None:
    """A tower the numpy path does not implement (a non-square `shortest`) is refused beyond 4:1, not resized to gigabytes."""
    cfg = {**CFG, "size": (224, 160)}
    with pytest.raises(Exception, match="square"):
        Preprocessing.of(cfg)
    bounded = BoundedTransform(open_clip.image_transform((224, 160), is_train=False), None, MAX_ASPECT)
    assert tuple(bounded(noise((300, 200))).shape) == (3, 224, 160)
    with pytest.raises(BadImage, match="1x30000 pixels: an aspect ratio over 4:1"):
        bounded(noise((1, 30000)))
