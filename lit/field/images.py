"""Images in the field, with PIL and numpy only: finding them, opening them safely, preprocessing like open_clip.

- `discover` turns files, folders (recursive, by image suffix) and text files of paths (`.txt`,
  `.lst`: one path a line, `#` comments, relative to the list) into one ordered list.
  A link to a missing file, inside a folder or named, is skipped with the reason like any other.
- `open_image` applies the EXIF orientation and returns RGB; anything that is not a readable
  image (truncated, another format, a decompression bomb) raises `BadImage` with the reason.
  It holds at most two copies of the pixels while decoding (the decoded image and its RGB or
  rotated version), 4 bytes a pixel in RGB.
- `Preprocessing` is open_clip's eval transform (resize the short side, center crop, to [0, 1],
  normalize) in numpy: the exported model needs no torch or torchvision (a test checks it
  against open_clip's own transform). `Preprocessing.reduce` is its resize and crop alone, which
  the torch path uses too (lit.field.torch_model), so both hold the same bounded memory.

Memory of the resize: resizing the short side first makes a 1 x 30,000 image (142 bytes as a
PNG) a 224 x 6,720,000 one (6 GB) before the crop keeps 224 x 224. Images up to MAX_ASPECT
(4:1: every camera format, 4:3 to 21:9, and 3:1 panoramas) take exactly open_clip's path: its
resized image holds at most 4 x 224² pixels, its intermediate one fewer than the decoded image.
Beyond 4:1, `shortest` resamples only the window the center crop keeps, with the two passes of
PIL's full resize in its order, with its filter and scale: it holds about (short side)² source
pixels, under 1/4 of the decoded image, and agrees with the full path within one 8-bit level, at
under 3% of the values (the window's coordinates reach PIL as 32-bit floats; tests measure it).
`squash` of an image taller than 4:1 resizes the height first, as Pillow 13 does anyway (a
horizontal-first pass would hold width x source height pixels).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from lit.configlib import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LIST_SUFFIXES = (".txt", ".lst")
MAX_PIXELS = 64_000_000
"""Most pixels an image may have (a 64 MP photo); more is refused as a possible decompression bomb."""

MAX_ASPECT = 4.0
"""Longest aspect ratio (long side / short side) preprocessed exactly as open_clip does; beyond, see the module doc."""

_INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_SUPPORT = {Image.Resampling.BICUBIC: 2.0, Image.Resampling.BILINEAR: 1.0}
"""Half-width of each filter, in output pixels (PIL scales it by the reduction factor)."""


class BadImage(Exception):
    """A file or upload that cannot be used as an image; the message says why."""


@dataclass(frozen=True)
class Skipped:
    """An input that was not predicted, and why."""

    path: str
    reason: str


def _list_file(path: Path) -> tuple[list[Path], list[Skipped]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        return [], [Skipped(str(path), f"cannot read the list of paths: {err}")]
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out, []


def _missing(path: Path) -> str:
    """Why a path that is not a file or folder cannot be used."""
    if path.is_symlink():
        return f"a broken link: its target {os.readlink(path)} does not exist (or the links loop)"
    return "no such file or folder" if not path.exists() else "not a regular file"


def _folder(path: Path) -> tuple[list[Path], list[Skipped]]:
    """Files with an image suffix under `path`, sorted, and those that cannot be read as files (broken links...)."""
    found: list[Path] = []
    skipped: list[Skipped] = []
    for p in sorted(q for q in path.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES):
        if p.is_file():
            found.append(p)
        elif not p.is_dir():  # a folder named like an image is searched by rglob itself
            skipped.append(Skipped(str(p), _missing(p)))
    return found, skipped


def discover(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Image files named by `inputs`, in order (folders sorted, duplicates once), and the inputs skipped."""
    found: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            found.append(p)

    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            files, bad = _folder(path)
            skipped += bad
            for p in files:
                add(p)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            listed, bad = _list_file(path)
            skipped += bad
            for p in listed:
                if p.is_file():
                    add(p)
                else:
                    skipped.append(Skipped(str(p), f"listed in {path}: {_missing(p)}"))
        elif path.is_file():
            add(path)  # any other file is tried as an image: a non-image is skipped with the reason
        else:
            skipped.append(Skipped(str(path), _missing(path)))
    return found, skipped


def open_image(source: str | Path | bytes | IO[bytes], max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image as RGB with its EXIF orientation applied; BadImage when it is not a usable image."""
    stream: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadImage(f"{w}x{h} pixels is more than {max_pixels:,}: refused as a possible decompression bomb")
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # the rotated pixels replace the decoded ones (no copy when upright)
                rgb = im if im.mode == "RGB" else im.convert("RGB")
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(f"refused as a decompression bomb ({err})") from err
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, EOFError... for bad files
        raise BadImage(f"not a readable image ({type(err).__name__}: {err})") from err
    return rgb


@dataclass(frozen=True)
class Preprocessing:
    """open_clip's eval preprocessing of an image tower: size (height, width), mean, std, interpolation, resize mode."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def of(cls, cfg: dict[str, Any]) -> Preprocessing:
        """From a tower's `preprocess_cfg` (or the export's preprocessing.json); unsupported modes are a ConfigError."""
        size = cfg["size"]
        size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        pre = cls(size, tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
                  str(cfg.get("interpolation") or "bicubic"), str(cfg.get("resize_mode") or "shortest"))
        if pre.interpolation not in _INTERPOLATION:
            raise ConfigError("", "preprocess_cfg.interpolation", f"{pre.interpolation!r}: the export supports bicubic, bilinear")
        if pre.resize_mode not in ("shortest", "squash") or (pre.resize_mode == "shortest" and size[0] != size[1]):
            raise ConfigError("", "preprocess_cfg.resize_mode",
                              f"{pre.resize_mode!r} with size {size}: the export supports `shortest` (square) and `squash`")
        return pre

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def reduce(self, image: Image.Image) -> Image.Image:
        """The resized and cropped image (width, height = size), as torchvision's Resize + CenterCrop make it.

        Up to MAX_ASPECT it is exactly their path; beyond, memory stays bounded (see the module doc).
        """
        h, w = self.size
        resample = _INTERPOLATION[self.interpolation]
        iw, ih = image.size
        extreme = max(iw, ih) > MAX_ASPECT * min(iw, ih)
        if self.resize_mode == "squash":
            if extreme and ih > max(iw, h):  # the height first, as Pillow 13 does, whatever the version (w x ih pixels otherwise)
                image = image.resize((iw, h), resample)
            return image.resize((w, h), resample) if image.size != (w, h) else image
        # torchvision: the short side to `size`, the long side int(size * long / short)
        target = (h, int(h * ih / iw)) if iw <= ih else (int(h * iw / ih), h)
        top, left = int(round((target[1] - h) / 2.0)), int(round((target[0] - w) / 2.0))
        window = (left, top, left + w, top + h)
        if extreme:
            return _resize_window(image, target, window, resample)
        if image.size != target:
            image = image.resize(target, resample)
        return image.crop(window)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """[3, H, W] float32, as torchvision's Resize + CenterCrop + ToTensor + Normalize compute it."""
        x = np.asarray(self.reduce(image), dtype=np.uint8).astype(np.float32) / np.float32(255.0)
        x = x.transpose(2, 0, 1)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def _vertical_first(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether PIL's resize from `size` to `target` runs its vertical pass first (Pillow 13: when the height shrinks more
    than twice as much as the width); the order changes how the intermediate 8-bit values round."""
    (iw, ih), (tw, th) = size, target
    return th < ih and ih - th > 2 * (iw - tw)


def _resize_window(image: Image.Image, target: tuple[int, int], window: tuple[int, int, int, int],
                   resample: Image.Resampling) -> Image.Image:
    """The pixels `window` of `image.resize(target, resample)`, computed from the source pixels they need only.

    The two passes of PIL's full resize, in its order, with its filter and scale, each over the window
    (PIL's own `box` would pick its order from the window's sizes, and round differently).
    """
    iw, ih = image.size
    left, top, right, bottom = window
    w, h = right - left, bottom - top
    sx, sy = iw / target[0], ih / target[1]
    x0, x1, y0, y1 = left * sx, min(right * sx, iw), top * sy, min(bottom * sy, ih)
    mx, my = _SUPPORT[resample] * max(sx, 1.0) + 2, _SUPPORT[resample] * max(sy, 1.0) + 2  # the filter's reach
    c0, c1 = max(0, math.floor(x0 - mx)), min(iw, math.ceil(x1 + mx))
    r0, r1 = max(0, math.floor(y0 - my)), min(ih, math.ceil(y1 + my))
    source = image.crop((c0, r0, c1, r1))  # box coordinates stay small: PIL passes them as 32-bit floats
    cols, rows = (x0 - c0, x1 - c0), (y0 - r0, y1 - r0)
    if _vertical_first(image.size, target):
        middle = source.resize((c1 - c0, h), resample, box=(0, rows[0], c1 - c0, rows[1]))
        return middle.resize((w, h), resample, box=(cols[0], 0, cols[1], h))
    middle = source.resize((w, r1 - r0), resample, box=(cols[0], 0, cols[1], r1 - r0))
    return middle.resize((w, h), resample, box=(0, rows[0], w, rows[1]))


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most `size` items."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "MAX_ASPECT", "MAX_PIXELS", "BadImage", "Preprocessing", "Skipped", "batches", "discover",
           "open_image"]
