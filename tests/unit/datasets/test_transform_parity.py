"""Our gray transforms against the reference's own (timm's create_transform for fine-tuning, torchvision for
pre-training and evaluation) on the RGB copy of the same image under the same seeds: the same crop boxes,
the same flips, the same RandAug ops and magnitudes, and pixel-equal outputs."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T

from thoraxmae.datasets.config import NIH_MEAN, NIH_STD
from thoraxmae.datasets.transforms import (
    HorizontalFlip,
    RandomResizedCrop,
    TorchRandomResizedCrop,
    build_eval_transform,
    build_finetune_transform,
    build_pretrain_transform,
    crop_scale,
    eval_crop_pct,
    randaug_config,
)

SHAPES = [(96, 96), (112, 80), (80, 120)]  # (H, W): square like NIH, portrait and landscape
BICUBIC = T.InterpolationMode.BICUBIC
GRAY_LEVEL = 1 / (255 * NIH_STD)  # one gray level in normalised units


def xray(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth structure plus noise, so every op (crop, flip, RandAug) changes pixels."""
    yy, xx = np.mgrid[:h, :w]
    base = 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 30 * xx / w
    return (base + np.random.default_rng(seed).normal(0, 12, (h, w))).clip(0, 255).astype(np.uint8)


def seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def reference_finetune(img_size: int, crop_min: float, magnitude: int, hflip: float = 0.5):
    return create_transform(img_size, is_training=True, scale=crop_scale(crop_min), hflip=hflip,
                            auto_augment=randaug_config(magnitude), interpolation="bicubic", re_prob=0,
                            mean=(NIH_MEAN,) * 3, std=(NIH_STD,) * 3)


def gray_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """The largest difference in gray levels; the reference's three channels must be equal."""
    assert ours.shape == ref.shape
    assert torch.equal(ref[0], ref[1]) and torch.equal(ref[0], ref[2])
    return float((ours[0] - ref[0]).abs().max() / GRAY_LEVEL)


@pytest.mark.parametrize("crop_min", [0.08, 0.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_crop_boxes_are_timms(shape, crop_min):
    h, w = shape
    pil = Image.new("L", (w, h))
    ours = RandomResizedCrop(64, crop_scale(crop_min))
    for s in range(200):
        seed_all(s)
        left, top, right, bottom = ours.box(w, h)
        seed_all(s)
        assert (top, left, bottom - top, right - left) == RandomResizedCropAndInterpolation.get_params(
            pil, crop_scale(crop_min), (3 / 4, 4 / 3))


def test_pretrain_crop_boxes_are_torchvisions():
    pil = Image.new("L", (80, 112))
    ours = TorchRandomResizedCrop(64, crop_scale(0.5))
    for s in range(200):
        seed_all(s)
        left, top, right, bottom = ours.box(80, 112)
        seed_all(s)
        assert (top, left, bottom - top, right - left) == T.RandomResizedCrop.get_params(pil, [0.5, 1.0], [3 / 4, 4 / 3])


def test_flips_are_torchvisions():
    img = Image.fromarray(xray(8, 8))
    ours, ref = HorizontalFlip(0.5), T.RandomHorizontalFlip(0.5)
    torch.manual_seed(0)
    a = [ours(img).tobytes() == img.tobytes() for _ in range(200)]
    torch.manual_seed(0)
    b = [ref(img).tobytes() == img.tobytes() for _ in range(200)]
    assert a == b and 70 < sum(a) < 130


def test_randaug_ops_and_magnitudes_are_timms():
    ours = build_finetune_transform(224, 0.08, 6, True, NIH_MEAN, NIH_STD).ops[-1]
    ref = next(t for t in reference_finetune(224, 0.08, 6).transforms if type(t).__name__ == "RandAugment")
    assert ours.num_layers == ref.num_layers == 2 and ours.choice_weights is ref.choice_weights is None
    assert [op.name for op in ours.ops] == [op.name for op in ref.ops] and len(ours.ops) == 15
    for a, b in zip(ours.ops, ref.ops):
        assert (a.aug_fn, a.level_fn, a.prob, a.magnitude, a.magnitude_std) == \
            (b.aug_fn, b.level_fn, b.prob, b.magnitude, b.magnitude_std) == (a.aug_fn, a.level_fn, 0.5, 6, 0.5)
        # one gray fill level where the reference has (129, 129, 129); the same translate / resampling
        assert (a.kwargs["fillcolor"],) * 3 == b.kwargs["fillcolor"] == (129, 129, 129)
        assert a.kwargs["resample"] == b.kwargs["resample"] and a.hparams["translate_const"] == 100


@pytest.mark.parametrize("crop_min", [0.08, 0.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_finetune_transform_equals_timms_create_transform(shape, crop_min):
    img = xray(*shape)
    ours, ref = build_finetune_transform(64, crop_min, 6, True, NIH_MEAN, NIH_STD), reference_finetune(64, crop_min, 6)
    plain = build_finetune_transform(64, crop_min, 0, False, NIH_MEAN, NIH_STD)
    flip_only = build_finetune_transform(64, crop_min, 0, True, NIH_MEAN, NIH_STD)
    flipped = augmented = 0
    for s in range(40):
        seed_all(s)
        a = ours(img)
        seed_all(s)
        assert gray_diff(a, ref(Image.fromarray(img).convert("RGB"))) < 1e-3, f"seed {s}"
        seed_all(s)
        b = plain(img)  # the same crop, no flip, no RandAug
        seed_all(s)
        c = flip_only(img)  # the same crop and flip, no RandAug
        flipped += torch.equal(c, b.flip(-1)) and not torch.equal(c, b)
        augmented += not torch.equal(a, c)
    assert 10 <= flipped <= 30 and augmented >= 20  # flips and RandAug really happened


def test_finetune_without_flip_equals_timms_hflip_zero():
    img = xray(96, 96)
    ours, ref = build_finetune_transform(64, 0.08, 6, False, NIH_MEAN, NIH_STD), reference_finetune(64, 0.08, 6, 0.0)
    for s in range(20):
        seed_all(s)
        a = ours(img)
        seed_all(s)
        assert gray_diff(a, ref(Image.fromarray(img).convert("RGB"))) < 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_pretrain_transform_equals_torchvisions(shape):
    img = xray(*shape)
    ours = build_pretrain_transform(64, 0.5, True, NIH_MEAN, NIH_STD)
    ref = T.Compose([T.RandomResizedCrop(64, scale=(0.5, 1.0), interpolation=BICUBIC), T.RandomHorizontalFlip(),
                     T.ToTensor(), T.Normalize([NIH_MEAN] * 3, [NIH_STD] * 3)])
    for s in range(30):
        seed_all(s)
        a = ours(img)
        seed_all(s)
        assert gray_diff(a, ref(Image.fromarray(img).convert("RGB"))) < 1e-3


@pytest.mark.parametrize("img_size, shape", [(64, (96, 96)), (64, (112, 80)), (64, (81, 121)), (56, (64, 64)),
                                             (256, (300, 340)), (256, (256, 256)), (32, (37, 50))])
def test_eval_transform_equals_resize_and_centre_crop(img_size, shape):
    img = xray(*shape)
    size = int(img_size / eval_crop_pct(img_size))
    ref = T.Compose([T.Resize(size, interpolation=BICUBIC), T.CenterCrop(img_size), T.ToTensor(),
                     T.Normalize([NIH_MEAN] * 3, [NIH_STD] * 3)])
    a = build_eval_transform(img_size, NIH_MEAN, NIH_STD)(img)
    assert gray_diff(a, ref(Image.fromarray(img).convert("RGB"))) < 1e-3


def test_eval_crop_pct_is_the_references():
    assert eval_crop_pct(224) == 0.875 and eval_crop_pct(64) == 0.875
    assert eval_crop_pct(256) == 1.0 and eval_crop_pct(384) == 1.0
