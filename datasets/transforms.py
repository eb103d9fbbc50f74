"""Image transforms for pre-training, fine-tuning and evaluation (docs/paper.md recipes).

Each transform maps a uint8 [S, S] numpy image (a store image) to a float32 tensor
[in_chans, img_size, img_size]. They work on one-channel PIL "L" images all the way and copy the gray
channel to `in_chans` only at the end (a broadcast view, no copy), which is what makes them several
times cheaper than decoding full-size PNGs and augmenting RGB (benchmarks/loader.py).

Knob translation points (docs/architecture.md): `crop_min` becomes RandomResizedCrop scale=(crop_min, 1.0) in
`crop_scale`; `randaug_magnitude` becomes timm's RandAugment string in `randaug_config`.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from thoraxmae.datasets.errors import DataError

BICUBIC = Image.Resampling.BICUBIC
CROP_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of RandomResizedCrop (torchvision / timm default)
EVAL_CROP_PCT = 224 / 256  # docs/paper.md: eval resizes to 256 and centre-crops 224
Op = Callable[[Image.Image], Image.Image]


def crop_scale(crop_min: float) -> tuple[float, float]:
    """`pretrain.crop_min` / `finetune.crop_min` -> RandomResizedCrop scale (the one translation point)."""
    if not 0.0 < crop_min <= 1.0:
        raise DataError(f"crop_min={crop_min} must lie in (0, 1]")
    return (crop_min, 1.0)


RANDAUG_MAX = 10  # timm's RandAugment magnitude scale is 0..10 (_LEVEL_DENOM)


def randaug_config(magnitude: int) -> str:
    """`finetune.randaug_magnitude` -> timm RandAugment config (docs/paper.md: the paper uses m6)."""
    return f"rand-m{magnitude}-mstd0.5-inc1"


class RandomResizedCrop:
    """Random area fraction in `scale` and aspect ratio in CROP_RATIO, resampled (bicubic) straight to
    `size` in one PIL call (`resize(box=...)`): no intermediate crop image."""

    def __init__(self, size: int, scale: tuple[float, float]):
        self.size, self.scale = size, scale
        self.log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The crop box (left, top, right, bottom); torchvision's sampling, falling back to a centre crop."""
        area = width * height
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            ratio = math.exp(random.uniform(*self.log_ratio))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                left, top = random.randint(0, width - w), random.randint(0, height - h)
                return left, top, left + w, top + h
        ratio = width / height
        if ratio < CROP_RATIO[0]:
            w, h = width, round(width / CROP_RATIO[0])
        elif ratio > CROP_RATIO[1]:
            w, h = round(height * CROP_RATIO[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.resize((self.size, self.size), BICUBIC, box=self.box(*img.size))


class HorizontalFlip:
    def __init__(self, p: float):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < self.p else img


class ResizeCenterCrop:
    """Eval: resize to img_size / EVAL_CROP_PCT (bicubic) and centre-crop img_size, as one resampling."""

    def __init__(self, size: int):
        self.size = size
        self.resized = math.floor(size / EVAL_CROP_PCT)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        sx, sy = w / self.resized, h / self.resized
        off = (self.resized - self.size) / 2
        box = (off * sx, off * sy, (off + self.size) * sx, (off + self.size) * sy)
        return img.resize((self.size, self.size), BICUBIC, box=box)


def rand_augment(magnitude: int, img_size: int, mean: float) -> Op:
    """timm RandAugment on gray images (fill = the mean gray level, bicubic), as timm's create_transform."""
    from timm.data.auto_augment import rand_augment_transform

    # timm's inc1 posterize keeps 4 - int(level / 10 * 4) bits: 0 at level 10, which PIL rejects. With
    # mstd0.5 a magnitude near 10 is drawn often (m9: ~2% of images), so clip draws just below 10.
    hparams = {"translate_const": int(img_size * 0.45), "img_mean": round(255 * mean), "interpolation": BICUBIC,
               "magnitude_max": RANDAUG_MAX - 0.01}
    return rand_augment_transform(randaug_config(magnitude), hparams)


class XrayTransform:
    """uint8 [S, S] -> PIL "L" -> `ops` -> float32 tensor [in_chans, H, W], (x / 255 - mean) / std."""

    def __init__(self, ops: Sequence[Op], mean: float, std: float, in_chans: int):
        if in_chans < 1:
            raise DataError(f"in_chans={in_chans} must be >= 1")
        self.ops, self.in_chans = list(ops), in_chans
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        if img.ndim != 2 or img.dtype != np.uint8:
            raise DataError(f"transform expects a uint8 [H, W] image, got {img.dtype} {list(img.shape)}")
        pil = Image.fromarray(img)
        for op in self.ops:
            pil = op(pil)
        x = torch.from_numpy(np.array(pil, dtype=np.uint8))  # [H, W] uint8, own copy
        x = x.to(torch.float32).mul_(self.scale).sub_(self.shift)
        return x.unsqueeze(0).expand(self.in_chans, -1, -1)  # [C, H, W], gray broadcast to C channels

    def __repr__(self) -> str:
        return f"XrayTransform({self.ops}, in_chans={self.in_chans})"


def _flip_p(hflip: bool | float) -> float:
    p = (0.5 if hflip else 0.0) if isinstance(hflip, bool) else float(hflip)
    if not 0.0 <= p <= 1.0:
        raise DataError(f"hflip={hflip} must be a bool or a probability in [0, 1]")
    return p


def build_pretrain_transform(img_size: int, crop_min: float, hflip: bool | float, mean: float, std: float,
                             in_chans: int = 3) -> XrayTransform:
    """MAE pre-training (docs/paper.md): RandomResizedCrop(scale=(crop_min, 1)), bicubic, + horizontal flip."""
    ops: list[Op] = [RandomResizedCrop(img_size, crop_scale(crop_min))]
    if _flip_p(hflip) > 0:
        ops.append(HorizontalFlip(_flip_p(hflip)))
    return XrayTransform(ops, mean, std, in_chans)


def build_finetune_transform(img_size: int, crop_min: float, randaug_magnitude: int, hflip: bool | float,
                             mean: float, std: float, in_chans: int = 3) -> XrayTransform:
    """Fine-tuning (docs/paper.md): RandomResizedCrop(scale=(crop_min, 1)), flip, RandAug m (0 disables it)."""
    if not 0 <= randaug_magnitude <= RANDAUG_MAX:
        raise DataError(f"randaug_magnitude={randaug_magnitude} must lie in [0, {RANDAUG_MAX}] (timm's RandAugment scale)")
    ops: list[Op] = [RandomResizedCrop(img_size, crop_scale(crop_min))]
    if _flip_p(hflip) > 0:
        ops.append(HorizontalFlip(_flip_p(hflip)))
    if randaug_magnitude > 0:
        ops.append(rand_augment(randaug_magnitude, img_size, mean))
    return XrayTransform(ops, mean, std, in_chans)


def build_eval_transform(img_size: int, mean: float, std: float, in_chans: int = 3) -> XrayTransform:
    """Evaluation (docs/paper.md): resize to img_size * 256 / 224 (bicubic), centre-crop img_size."""
    return XrayTransform([ResizeCenterCrop(img_size)], mean, std, in_chans)
