"""Drawn datasets in the exact iNat2021 layout: class styles, procedurally drawn images, and the writer.

Each class has its own shape, texture and palette (`ClassStyle`), and each image varies
position, scale, rotation, colors, background and noise, so a frozen ImageNet model can tell
the classes apart. `write_drawn_inat` writes the split JSON files and image folders for any
list of categories; lit.data.toy (32 real species), lit.data.toy_hard (96 look-alikes) and
lit.data.toy_wide (the paper's 10,000 classes) choose the categories, styles and ranges
(lit.data.toy_ranges: where and when each class is seen). Output is byte-identical for a given
seed, and an image's bytes never depend on its class's range.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from lit.data.inat import Category
from lit.data.toy_ranges import Range, draw_place

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "hexagon")
TEXTURES = ("solid", "stripes", "checker", "dots")
_SPLIT_CODES = {"train": 1, "val": 2, "public_test": 3}


@dataclass(frozen=True)
class ClassStyle:
    """What makes a class recognizable: shape, texture, two foreground colors, background hue."""

    shape: str
    texture: str
    hue: float
    hue2: float
    bg_hue: float

    @staticmethod
    def of(index: int) -> ClassStyle:
        golden = 0.6180339887
        hue = (index * golden) % 1.0
        return ClassStyle(
            shape=SHAPES[index % len(SHAPES)], texture=TEXTURES[(index // len(SHAPES)) % len(TEXTURES)],
            hue=hue, hue2=(hue + 0.33 + 0.1 * (index % 3)) % 1.0, bg_hue=(hue + 0.5 + 0.15 * (index % 2)) % 1.0,
        )


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32) * 255


def _polygon(n: int, radius: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _shape_parts(shape: str) -> list[tuple[list[tuple[float, float]], int]]:
    """Unit-size polygons with their fill (255 adds, 0 cuts a hole)."""
    if shape == "circle":
        return [(_polygon(48), 255)]
    if shape == "square":
        return [(_polygon(4, 1.0, math.pi / 4), 255)]
    if shape == "triangle":
        return [(_polygon(3, 1.1, -math.pi / 2), 255)]
    if shape == "star":
        return [([p for k in range(5) for p in (_polygon(5, 1.1, -math.pi / 2)[k], _polygon(5, 0.45, -math.pi / 2 + math.pi / 5)[k])], 255)]
    if shape == "cross":
        a, b = 1.0, 0.35
        return [([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)], 255)]
    if shape == "ring":
        return [(_polygon(48), 255), (_polygon(48, 0.55), 0)]
    if shape == "crescent":
        return [(_polygon(48), 255), ([(x + 0.45, y - 0.1) for x, y in _polygon(48, 0.85)], 0)]
    return [(_polygon(6), 255)]  # hexagon


def draw_image(style: ClassStyle, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One image of a class: its shape and texture over a gradient background, jittered by `rng`.

    Large images are drawn at a short side of at most 192 pixels and scaled up (cheap), then
    get full-resolution sensor noise.
    """
    out_size = (width, height)
    shrink = max(1.0, min(width, height) / 192)
    width, height = max(1, round(width / shrink)), max(1, round(height / shrink))
    x = np.arange(width, dtype=np.float32)[None, :] - width / 2
    y = np.arange(height, dtype=np.float32)[:, None] - height / 2
    side = min(width, height)
    # Background: a two-color gradient in a random direction.
    bg_a = _rgb(style.bg_hue + rng.uniform(-0.04, 0.04), rng.uniform(0.15, 0.4), rng.uniform(0.55, 0.9))
    bg_b = _rgb(style.bg_hue + rng.uniform(-0.08, 0.08), rng.uniform(0.1, 0.35), rng.uniform(0.3, 0.7))
    theta = rng.uniform(0, 2 * math.pi)
    t = np.clip((x * math.cos(theta) + y * math.sin(theta)) / max(width, height) + 0.5, 0, 1)
    # Foreground: the class texture in two class colors, rotated with the shape.
    angle = rng.uniform(0, 2 * math.pi)
    period = side * rng.uniform(0.07, 0.1)
    u = (x * math.cos(angle) + y * math.sin(angle)) / period
    v = (y * math.cos(angle) - x * math.sin(angle)) / period
    pattern: np.ndarray  # float32 for the textures, float64 for the gradient
    if style.texture == "stripes":
        pattern = (np.floor(u).astype(np.int32) & 1).astype(np.float32)
    elif style.texture == "checker":
        pattern = ((np.floor(u).astype(np.int32) + np.floor(v).astype(np.int32)) & 1).astype(np.float32)
    elif style.texture == "dots":
        du, dv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
        pattern = (du * du + dv * dv < 0.09).astype(np.float32)
    else:
        pattern = np.clip(0.5 + u * (period / side), 0, 1) * 0.35
    fg_a = _rgb(style.hue + rng.uniform(-0.02, 0.02), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    fg_b = _rgb(style.hue2 + rng.uniform(-0.02, 0.02), rng.uniform(0.7, 1.0), rng.uniform(0.25, 0.55))
    background = _merge(bg_a, bg_b, t)
    foreground = _merge(fg_a, fg_b, pattern)
    # Shape mask: polygons scaled, rotated and placed at random.
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = width / 2 + rng.uniform(-0.15, 0.15) * width, height / 2 + rng.uniform(-0.15, 0.15) * height
    scale, rot = side * rng.uniform(0.26, 0.4), rng.uniform(0, 2 * math.pi)
    c, s = math.cos(rot), math.sin(rot)
    for points, fill in _shape_parts(style.shape):
        draw.polygon([(cx + scale * (px * c - py * s), cy + scale * (px * s + py * c)) for px, py in points], fill=fill)
    image = Image.composite(foreground, background, mask)
    if image.size != out_size:
        image = image.resize(out_size, Image.Resampling.BILINEAR)
    # Gray sensor noise, uniform with a random strength, added to every channel.
    k = rng.uniform(3.0, 9.0) / 73.6  # 73.6 is the std of uniform bytes
    raw = np.frombuffer(rng.bytes(out_size[0] * out_size[1]), np.uint8).reshape(out_size[1], out_size[0])
    noise = Image.fromarray(np.clip(128.0 + (raw.astype(np.float32) - 127.5) * k, 0, 255).astype(np.uint8), "L")
    return ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), scale=1.0, offset=-128)


def _merge(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> Image.Image:
    """An RGB image blending colors `a` to `b` by the weights `t` (broadcast to the image size)."""
    planes = [Image.fromarray(np.broadcast_to(np.clip(a[ch] + t * (b[ch] - a[ch]), 0, 255), t.shape).astype(np.uint8), "L")
              for ch in range(3)]
    return Image.merge("RGB", planes)


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """Baseline JPEG bytes (deterministic for a given image)."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _image_entry(iid: int, file_name: str, width: int, height: int, rng: np.random.Generator) -> dict[str, Any]:
    """The image's record. Its draws from `rng` come before the image's and must never change (they set the image's bytes)."""
    located = rng.uniform() > 0.1
    return {
        "id": iid, "width": width, "height": height, "file_name": file_name, "license": int(rng.integers(1, 7)),
        "rights_holder": "lit toy-inat", "date": f"2019-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d} 12:00:00+00:00",
        "latitude": round(float(rng.uniform(-60, 70)), 5) if located else None,
        "longitude": round(float(rng.uniform(-180, 180)), 5) if located else None,
        "location_uncertainty": int(rng.integers(1, 500)) if located else None,
    }


def _document(categories: list[Category], images: list[dict[str, Any]], labels: list[int] | None,
              info: tuple[str, str]) -> dict[str, Any]:
    version, description = info
    doc: dict[str, Any] = {
        "info": {"year": 2021, "version": version, "description": description,
                 "contributor": "lit", "url": "", "date_created": "2021-01-01 00:00:00"},
        "images": images,
        "categories": [c.to_json() for c in categories],
        "licenses": [{"id": i, "name": f"toy license {i}", "url": ""} for i in range(1, 7)],
    }
    if labels is not None:
        doc["annotations"] = [{"id": img["id"], "image_id": img["id"], "category_id": cid} for img, cid in zip(images, labels)]
    return doc


def _samples(seed: int, split: str, per_class: int, categories: list[Category]) -> Iterator[tuple[int, int, Category, np.random.Generator]]:
    """(class index, image index in class, category, the image's own generator)."""
    for index, cat in enumerate(categories):
        for k in range(per_class):
            yield index, k, cat, np.random.default_rng([seed, _SPLIT_CODES[split], cat.id, k])


def write_drawn_inat(
    out: str | Path,
    categories: Sequence[Category],
    style_of: Callable[[int], ClassStyle],
    info: tuple[str, str],
    *,
    seed: int = 0,
    train_per_class: int = 40,
    val_per_class: int = 10,
    image_size: int | tuple[int, int] = 128,
    test_per_class: int = 2,
    quality: int = 90,
    on_image: Callable[[], None] | None = None,
    range_of: Callable[[int], Range] | None = None,
) -> Path:
    """Write train/train_mini/val/public_test JSON and their image folders under `out`; returns `out`.

    `style_of(index)` draws the class at that index of `categories`; `info` is the JSON's
    (version, description). `image_size` is a side or (width, height). train_mini holds the first
    quarter of each class's train images (same ids, own folder, as the official one). `on_image`
    is called after each image (progress). `range_of(index)` is where and when the class at that
    index is seen: each image's latitude, longitude and date come from it, drawn by a generator of
    their own (None: anywhere on Earth, any day). About 10 % of the images have no coordinates.
    """
    out = Path(out)
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    categories = list(categories)
    next_id = 0
    docs: dict[str, tuple[list[dict[str, Any]], list[int] | None]] = {}
    mini: tuple[list[dict[str, Any]], list[int]] = ([], [])
    for split, per_class in (("train", train_per_class), ("val", val_per_class), ("public_test", test_per_class)):
        images: list[dict[str, Any]] = []
        labels: list[int] = []
        for index, k, cat, rng in _samples(seed, split, per_class, categories):
            name = str(uuid.UUID(bytes=rng.bytes(16), version=4))
            folder = "public_test" if split == "public_test" else f"{split}/{cat.image_dir_name}"
            entry = _image_entry(next_id, f"{folder}/{name}.jpg", width, height, rng)
            if range_of is not None:  # a generator of its own: the image's draws stay the same
                place_rng = np.random.default_rng([seed, _SPLIT_CODES[split], cat.id, k, 7])
                entry.update(draw_place(range_of(index), place_rng, located=entry["latitude"] is not None))
            data = jpeg_bytes(draw_image(style_of(index), rng, width, height), quality)
            path = out / entry["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if split == "train" and k < max(1, per_class // 4):
                mini_path = out / "train_mini" / cat.image_dir_name / f"{name}.jpg"
                mini_path.parent.mkdir(parents=True, exist_ok=True)
                mini_path.write_bytes(data)
                mini[0].append({**entry, "file_name": f"train_mini/{cat.image_dir_name}/{name}.jpg"})
                mini[1].append(cat.id)
            images.append(entry)
            labels.append(cat.id)
            next_id += 1
            if on_image is not None:
                on_image()
        docs[split] = (images, None if split == "public_test" else labels)
    docs["train_mini"] = mini
    for split, (split_images, split_labels) in docs.items():
        (out / f"{split}.json").write_text(json.dumps(_document(categories, split_images, split_labels, info)))
    return out


__all__ = ["SHAPES", "TEXTURES", "ClassStyle", "draw_image", "jpeg_bytes", "write_drawn_inat"]
