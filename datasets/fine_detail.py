"""Fine detail a training crop keeps: its high-frequency energy relative to the reference's crop.

datasets/resolution.py counts source pixels against output pixels; that score ignores the resampling
filter, so every crop with enough pixels scores 1.0. This module measures what the pixels show. The
reference (docs/paper.md "Crops and stored resolution") cuts the box from the 1024 px original and
resizes it once (bicubic) to the output; a store crop cuts the same box from a smaller copy (the fitted
image or its half-resolution copy). Fine detail is the energy of the 3x3 Laplacian (the highest spatial
frequencies an output pixel can show), and a crop keeps

    fine_detail_kept = high_frequency_energy(store crop) / high_frequency_energy(reference crop)

(1.0: as sharp as the reference; every resampling stage is antialiased, so a store crop is never sharper
by more than noise). benchmarks/crop_detail.py measures it over drawn crops; the half copy is read only
where crops keep >= 0.98 of it (datasets/transforms.py HALF_COPY_MARGIN).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from thoraxmae.datasets.errors import DataError

BICUBIC = Image.Resampling.BICUBIC
FloatBox = tuple[float, float, float, float]  # left, top, right, bottom, in the image's pixel coordinates


def high_frequency_energy(img: np.ndarray) -> float:
    """Mean squared response of the 3x3 Laplacian over the interior of a gray image [H, W] (gray levels^2)."""
    if img.ndim != 2 or min(img.shape) < 3:
        raise DataError("high-frequency energy needs a gray [H, W] image of at least 3x3 px, got "
                        f"{list(img.shape)}")
    x = img.astype(np.float64)
    lap = 4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]  # [H-2, W-2]
    return float(np.mean(lap * lap))


def resized_crop(img: np.ndarray, box: FloatBox, output: int) -> np.ndarray:
    """uint8 [output, output]: `box` of the uint8 [H, W] image resampled once (bicubic, antialiased) to
    `output`."""
    return np.asarray(Image.fromarray(img).resize((output, output), BICUBIC, box=box), dtype=np.uint8)


def scaled_box(box: FloatBox, factor: float) -> FloatBox:
    """The same region in a copy whose sides are `factor` times the image's."""
    left, top, right, bottom = box
    return left * factor, top * factor, right * factor, bottom * factor


def fine_detail_kept(crop: np.ndarray, reference: np.ndarray) -> float:
    """The crop's high-frequency energy over the reference crop's (both [output, output])."""
    if crop.shape != reference.shape:
        raise DataError(f"crop {list(crop.shape)} and reference {list(reference.shape)} differ in shape")
    ref = high_frequency_energy(reference)
    if ref <= 0:
        raise DataError("the reference crop is flat (no high-frequency energy): fine detail is undefined "
                        "there")
    return high_frequency_energy(crop) / ref
