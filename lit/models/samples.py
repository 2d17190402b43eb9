"""Generated test images for checking a built tower against a reference: gradients, shapes and noise at varied sizes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def generated_images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    """`n` RGB images (gradients, shapes, noise) of varied sizes and aspect ratios around `size`: every resize path runs."""
    rng = np.random.default_rng(seed)
    shapes = [(size * 5 // 4, size), (size, size * 3 // 2), (size * 2, size * 2), (max(8, size * 3 // 4),) * 2]
    images = []
    for i in range(n):
        w, h = shapes[i % len(shapes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        mix = rng.uniform(-1, 1, size=(3, 3))
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) @ mix
        base = (base - base.min()) / (np.ptp(base) + 1e-6) * 255
        pixels = np.clip(base + rng.normal(0, 24, size=base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
            box = (x0, y0, int(rng.integers(x0 + 1, w)), int(rng.integers(y0 + 1, h)))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
        images.append(image)
    return images


__all__ = ["generated_images"]
