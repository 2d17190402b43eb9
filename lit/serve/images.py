"""Images in the field, with PIL and numpy only: finding them, opening them safely, preprocessing like open_clip.

- `discover` turns files, folders (recursive, by image suffix) and text files of paths (`.txt`,
  `.lst`: one path a line, `#` comments, relative to the list) into one ordered list.
- `open_image` applies the EXIF orientation and returns RGB; anything that is not a readable
  image (truncated, another format, a decompression bomb) raises `BadImage` with the reason.
- `Preprocessing` is open_clip's eval transform (resize the short side, center crop, to [0, 1],
  normalize) in numpy: the exported model needs no torch or torchvision (a test checks it
  against open_clip's own transform).
"""

from __future__ import annotations

import io
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

_INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


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
            for p in sorted(q for q in path.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()):
                add(p)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            listed, bad = _list_file(path)
            skipped += bad
            for p in listed:
                if p.is_file():
                    add(p)
                else:
                    skipped.append(Skipped(str(p), f"listed in {path} but not a file"))
        elif path.is_file():
            add(path)  # any other file is tried as an image: a non-image is skipped with the reason
        else:
            skipped.append(Skipped(str(path), "no such file or folder"))
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
                rgb = ImageOps.exif_transpose(im).convert("RGB")
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

    def __call__(self, image: Image.Image) -> np.ndarray:
        """[3, H, W] float32, as torchvision's Resize + CenterCrop + ToTensor + Normalize compute it."""
        h, w = self.size
        resample = _INTERPOLATION[self.interpolation]
        if self.resize_mode == "squash":
            target = (w, h)
        else:  # torchvision: the short side to `size`, the long side int(size * long / short)
            iw, ih = image.size
            short, long = (iw, ih) if iw <= ih else (ih, iw)
            new_short, new_long = h, int(h * long / short)
            target = (new_short, new_long) if iw <= ih else (new_long, new_short)
        if image.size != target:
            image = image.resize(target, resample)
        if self.resize_mode == "shortest":
            iw, ih = image.size
            top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
            image = image.crop((left, top, left + w, top + h))
        x = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
        x = x.transpose(2, 0, 1)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most `size` items."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "MAX_PIXELS", "BadImage", "Preprocessing", "Skipped", "batches", "discover",
           "open_image"]
