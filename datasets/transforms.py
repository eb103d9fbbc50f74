"""Image transforms for pre-training, fine-tuning and evaluation (docs/paper.md recipes).

Each transform maps a uint8 [H, W] numpy image (a store image) to a float32 tensor
[in_chans, img_size, img_size]. They work on one-channel PIL "L" images all the way and copy the gray
channel to `in_chans` only at the end (a broadcast view, no copy), which is what makes them several
times cheaper than decoding full-size PNGs and augmenting RGB (benchmarks/loader.py).

They repeat the reference's transforms op by op, drawing the same random numbers from the same
generators, so under the same seeds they give the same pixels as the reference does on the RGB copy
of the same image (tests/unit/datasets/test_transform_parity.py):
- fine-tuning: timm's `create_transform(img_size, is_training=True, auto_augment="rand-m6-mstd0.5-inc1",
  interpolation="bicubic")`: RandomResizedCrop (timm's, Python `random`), horizontal flip p=0.5
  (torch RNG), RandAugment (timm's own ops), ToTensor, Normalize;
- pre-training: torchvision's RandomResizedCrop (torch RNG, bicubic) + RandomHorizontalFlip;
- evaluation: resize the shorter side to img_size / crop_pct (bicubic), centre-crop img_size, with
  crop_pct 224/256 up to 224 px and 1.0 above.

A store image that had to shrink comes with a half-resolution copy (datasets/store_shards.py). The crop
box is always drawn on the image itself (the same random numbers, the same geometry); when the box
holds at least HALF_COPY_MARGIN times the output's pixels across in the half copy too, it is resampled
from there (bicubic, the box scaled by the copy's ratio), at a quarter of the resampling. Below that
margin the two resampling stages (original -> half copy -> output) soften the finest detail: such crops
keep 0.86-0.98 of the reference's high-frequency energy at 1-2x, >= 0.98 from 2x on
(datasets/fine_detail.py, benchmarks/crop_detail.py), so they are read from the image itself. A store
that holds the original (no half copy) gives the reference's pixels.

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
Op = Callable[[Image.Image], Image.Image]
Box = tuple[int, int, int, int]  # left, top, right, bottom
# The half copy serves a crop (or an eval resize) only when it holds this many times the output's pixels
# across: from 2x on, crops keep >= 0.98 of the reference's high-frequency energy (benchmarks/crop_detail.py
# on a real radiograph: 0.987 at 2-2.5x, 0.976 at 1.75-2x, 0.951 at 1.5-1.75x, 0.859 at 1-1.25x).
HALF_COPY_MARGIN = 2.0


def eval_crop_pct(img_size: int) -> float:
    """docs/paper.md: evaluation resizes to 256 and centre-crops 224 (0.875) up to 224 px; above, 1.0."""
    return 224 / 256 if img_size <= 224 else 1.0


def crop_scale(crop_min: float) -> tuple[float, float]:
    """`pretrain.crop_min` / `finetune.crop_min` -> RandomResizedCrop scale (the one translation point)."""
    if not 0.0 < crop_min <= 1.0:
        raise DataError(f"crop_min={crop_min} must lie in (0, 1]")
    return (crop_min, 1.0)


RANDAUG_MAX = 10  # timm's RandAugment magnitude scale is 0..10 (_LEVEL_DENOM)


def randaug_config(magnitude: int) -> str:
    """`finetune.randaug_magnitude` -> timm RandAugment config (docs/paper.md: the paper uses m6)."""
    return f"rand-m{magnitude}-mstd0.5-inc1"


def _fallback_box(width: int, height: int) -> Box:
    """The centre crop both libraries fall back to after 10 rejected draws."""
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class RandomResizedCrop:
    """timm's RandomResizedCropAndInterpolation: area fraction in `scale`, log-uniform aspect ratio in
    CROP_RATIO, drawn from Python's `random` (top before left); the box is cropped, then resized
    (bicubic) to `size` x `size`, as torchvision's `resized_crop` does on PIL images."""

    def __init__(self, size: int, scale: tuple[float, float], half_margin: float = HALF_COPY_MARGIN):
        self.size, self.scale, self.half_margin = size, scale, half_margin
        self.log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))

    def box(self, width: int, height: int) -> Box:
        area = width * height
        for _ in range(10):
            target = random.uniform(*self.scale) * area
            ratio = math.exp(random.uniform(*self.log_ratio))
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = random.randint(0, height - h)
                left = random.randint(0, width - w)
                return left, top, left + w, top + h
        return _fallback_box(width, height)

    def __call__(self, img: Image.Image, half: Image.Image | None = None) -> Image.Image:
        box = self.box(*img.size)
        if half is not None:
            sx, sy = half.width / img.width, half.height / img.height
            need = self.half_margin * self.size
            if (box[2] - box[0]) * sx >= need and (box[3] - box[1]) * sy >= need:
                scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
                return half.resize((self.size, self.size), BICUBIC, box=scaled)
        return img.crop(box).resize((self.size, self.size), BICUBIC)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale})"


class TorchRandomResizedCrop(RandomResizedCrop):
    """torchvision's RandomResizedCrop (the reference's pre-training crop): the same geometry, drawn from
    the torch RNG in torchvision's order and float32 arithmetic."""

    def box(self, width: int, height: int) -> Box:
        area = height * width
        log_ratio = torch.log(torch.tensor(CROP_RATIO))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
            w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,)).item())
                left = int(torch.randint(0, width - w + 1, size=(1,)).item())
                return left, top, left + w, top + h
        return _fallback_box(width, height)


class HorizontalFlip:
    """torchvision's RandomHorizontalFlip: flips when `torch.rand(1) < p` (the torch RNG, as the
    reference)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if torch.rand(1) < self.p else img

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class ResizeCenterCrop:
    """Eval: the shorter side resized to floor(size / crop_pct) (bicubic, aspect kept), then the centre
    size x size, with torchvision's Resize / CenterCrop rounding."""

    def __init__(self, size: int, half_margin: float = HALF_COPY_MARGIN):
        self.size, self.half_margin = size, half_margin
        self.crop_pct = eval_crop_pct(size)
        self.resized = math.floor(size / self.crop_pct)

    def __call__(self, img: Image.Image, half: Image.Image | None = None) -> Image.Image:
        w, h = img.size
        if w <= h:
            nw, nh = self.resized, int(self.resized * h / w)
        else:
            nw, nh = int(self.resized * w / h), self.resized
        if half is not None and min(half.size) >= self.half_margin * self.resized:
            img = half  # enough pixels to keep the reference's fine detail: resample from the half copy
        if (nw, nh) != img.size:
            img = img.resize((nw, nh), BICUBIC)
        top, left = round((nh - self.size) / 2.0), round((nw - self.size) / 2.0)
        return img.crop((left, top, left + self.size, top + self.size))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, crop_pct={self.crop_pct:.4f})"


def rand_augment(magnitude: int, img_size: int, mean: float) -> Op:
    """timm RandAugment on gray images with create_transform's hparams (fill = the mean gray level,
    bicubic)."""
    from timm.data.auto_augment import rand_augment_transform

    # timm's inc1 posterize keeps 4 - int(level / 10 * 4) bits: 0 at level 10, which PIL rejects. With
    # mstd0.5 a magnitude near 10 is drawn often (m9: ~2% of images), so clip draws just below 10. At the
    # paper's m6 a draw above 9.99 is 8 standard deviations away: the clip never changes its images.
    hparams = {"translate_const": int(img_size * 0.45), "img_mean": min(255, round(255 * mean)),
               "interpolation": BICUBIC, "magnitude_max": RANDAUG_MAX - 0.01}
    return rand_augment_transform(randaug_config(magnitude), hparams)


Stat = float | Sequence[float]  # one value for every channel, or one per channel (ImageNet's mean/std)


def _per_channel(value: Stat, in_chans: int, what: str) -> torch.Tensor | float:
    """A scalar stays a float (the gray channel is broadcast); a sequence must hold one value per channel."""
    if isinstance(value, int | float):
        return float(value)
    values = [float(v) for v in value]
    if len(values) != in_chans:
        raise DataError(f"{what}={tuple(values)} has {len(values)} values; the model reads {in_chans} "
                        "channel(s)")
    return torch.tensor(values, dtype=torch.float32).view(in_chans, 1, 1)  # [C, 1, 1]


class XrayTransform:
    """uint8 [H, W] -> PIL "L" -> `ops` -> float32 tensor [in_chans, H', W'], (x / 255 - mean) / std.

    `mean` / `std` are one value (the gray channel, broadcast to `in_chans`) or one value per channel (the
    gray image copied to RGB and normalised per channel, e.g. ImageNet's statistics).
    Called as transform(image) or transform(image, half) with the image's half-resolution copy, which
    the first op (the crop / resize) may read instead (module docstring)."""

    def __init__(self, ops: Sequence[Op], mean: Stat, std: Stat, in_chans: int):
        if in_chans < 1:
            raise DataError(f"in_chans={in_chans} must be >= 1")
        if not ops:
            raise DataError("a transform needs at least one op (the crop or resize)")
        self.ops, self.in_chans = list(ops), in_chans
        mean_c, std_c = _per_channel(mean, in_chans, "mean"), _per_channel(std, in_chans, "std")
        self.scale, self.shift = 1.0 / (255.0 * std_c), mean_c / std_c  # floats, or [C, 1, 1] tensors

    def __call__(self, img: np.ndarray, half: np.ndarray | None = None) -> torch.Tensor:
        if img.ndim != 2 or img.dtype != np.uint8:
            raise DataError(f"transform expects a uint8 [H, W] image, got {img.dtype} {list(img.shape)}")
        pil = Image.fromarray(img)
        first, *rest = self.ops
        pil = first(pil, Image.fromarray(half)) if half is not None else first(pil)
        for op in rest:
            pil = op(pil)
        x = torch.from_numpy(np.array(pil, dtype=np.uint8)).to(torch.float32)  # [H, W], own copy
        if isinstance(self.scale, torch.Tensor):  # per-channel statistics: one plane per channel
            return x.unsqueeze(0) * self.scale - self.shift  # [C, H, W]
        x = x.mul_(self.scale).sub_(self.shift)
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
    """MAE pre-training (docs/paper.md): torchvision RandomResizedCrop(scale=(crop_min, 1)), bicubic,
    + horizontal flip (True = p 0.5)."""
    ops: list[Op] = [TorchRandomResizedCrop(img_size, crop_scale(crop_min))]
    if _flip_p(hflip) > 0:
        ops.append(HorizontalFlip(_flip_p(hflip)))
    return XrayTransform(ops, mean, std, in_chans)


def build_finetune_transform(img_size: int, crop_min: float, randaug_magnitude: int, hflip: bool | float,
                             mean: float, std: float, in_chans: int = 3) -> XrayTransform:
    """Fine-tuning (docs/paper.md), timm's create_transform: RandomResizedCrop(scale=(crop_min, 1)),
    horizontal flip (True = p 0.5, the reference's), RandAug m (0 disables it)."""
    if not 0 <= randaug_magnitude <= RANDAUG_MAX:
        raise DataError(f"randaug_magnitude={randaug_magnitude} must lie in [0, {RANDAUG_MAX}] (timm's "
                        "RandAugment scale)")
    ops: list[Op] = [RandomResizedCrop(img_size, crop_scale(crop_min))]
    if _flip_p(hflip) > 0:
        ops.append(HorizontalFlip(_flip_p(hflip)))
    if randaug_magnitude > 0:
        ops.append(rand_augment(randaug_magnitude, img_size, mean))
    return XrayTransform(ops, mean, std, in_chans)


def build_eval_transform(img_size: int, mean: Stat, std: Stat, in_chans: int = 3) -> XrayTransform:
    """Evaluation (docs/paper.md): shorter side to img_size / crop_pct (bicubic), centre-crop img_size."""
    return XrayTransform([ResizeCenterCrop(img_size)], mean, std, in_chans)
