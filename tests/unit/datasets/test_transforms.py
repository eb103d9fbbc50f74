"""Transforms: shapes, normalisation, the crop_min / randaug_magnitude translations, flips, eval crop."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from thoraxmae.datasets.config import NIH_MEAN, NIH_STD
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.transforms import (
    RandomResizedCrop,
    build_eval_transform,
    build_finetune_transform,
    build_pretrain_transform,
    crop_scale,
    randaug_config,
)

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (64, 64), dtype=np.uint8)


def _seed(s=0):
    random.seed(s)
    np.random.seed(s)


@pytest.mark.parametrize("build", [
    lambda c: build_pretrain_transform(32, 0.5, True, NIH_MEAN, NIH_STD, in_chans=c),
    lambda c: build_finetune_transform(32, 0.08, 6, True, NIH_MEAN, NIH_STD, in_chans=c),
    lambda c: build_eval_transform(32, NIH_MEAN, NIH_STD, in_chans=c),
])
@pytest.mark.parametrize("chans", [1, 3])
def test_output_shape_dtype_and_identical_channels(build, chans):
    _seed()
    x = build(chans)(IMAGE)
    assert x.shape == (chans, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], x[-1])


@pytest.mark.parametrize("value", [0, 129, 255])
def test_normalisation_uses_mean_and_std(value):
    x = build_eval_transform(32, NIH_MEAN, NIH_STD)(np.full((64, 64), value, np.uint8))
    torch.testing.assert_close(x, torch.full((3, 32, 32), (value / 255 - NIH_MEAN) / NIH_STD), atol=1e-5,
                               rtol=0)


def test_knob_translations():
    assert crop_scale(0.5) == (0.5, 1.0)
    assert randaug_config(6) == "rand-m6-mstd0.5-inc1" and randaug_config(0) == "rand-m0-mstd0.5-inc1"
    with pytest.raises(DataError, match="crop_min"):
        build_pretrain_transform(32, 0.0, True, NIH_MEAN, NIH_STD)


@pytest.mark.parametrize("crop_min", [0.08, 0.5])
def test_crop_area_and_ratio_stay_in_range(crop_min):
    _seed(1)
    crop = RandomResizedCrop(32, crop_scale(crop_min))
    boxes = np.array([crop.box(256, 256) for _ in range(400)], float)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h / 256**2
    assert area.min() >= crop_min * 0.97 and area.max() <= 1.0
    assert np.all((w / h > 3 / 4 * 0.97) & (w / h < 4 / 3 * 1.03))
    assert np.all((boxes[:, :2] >= 0) & (boxes[:, 2:] <= 256))
    assert area.std() > 0.05  # really random


def test_full_scale_crop_without_flip_is_a_plain_resize():
    _seed()
    x = build_pretrain_transform(32, 1.0, False, 0.5, 0.5, in_chans=1)(IMAGE)
    expected = np.asarray(Image.fromarray(IMAGE).resize((32, 32), Image.Resampling.BICUBIC), np.float32)
    torch.testing.assert_close(x[0], torch.from_numpy((expected / 255 - 0.5) / 0.5), atol=1e-5, rtol=0)


def test_hflip_probability():
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))  # bright on the right
    flip = build_pretrain_transform(32, 1.0, 1.0, 0.5, 0.5, in_chans=1)
    keep = build_pretrain_transform(32, 1.0, False, 0.5, 0.5, in_chans=1)
    assert flip(ramp)[0, :, 0].mean() > flip(ramp)[0, :, -1].mean()
    assert keep(ramp)[0, :, 0].mean() < keep(ramp)[0, :, -1].mean()
    assert len(build_pretrain_transform(32, 0.5, True, 0.5, 0.5).ops) == 2  # True means p = 0.5


def test_randaug_magnitude_zero_disables_it():
    names = [type(op).__name__ for op in build_finetune_transform(32, 0.08, 0, True, 0.5, 0.25).ops]
    assert names == ["RandomResizedCrop", "HorizontalFlip"]
    ra = build_finetune_transform(32, 0.08, 6, True, 0.5, 0.25).ops[-1]
    assert type(ra).__name__ == "RandAugment" and ra.num_layers == 2
    assert {op.magnitude for op in ra.ops} == {6} and {op.magnitude_std for op in ra.ops} == {0.5}
    assert "PosterizeIncreasing" in {op.name for op in ra.ops}  # inc1: the increasing op set


def test_every_randaug_op_works_on_gray_images():
    ra = build_finetune_transform(32, 0.08, 10, False, NIH_MEAN, NIH_STD).ops[-1]
    img = Image.fromarray(IMAGE[:32, :32])
    _seed(2)
    for op in ra.ops:
        op.prob = 1.0
        out = op(img)
        assert out.mode == "L" and out.size == (32, 32), op.name


def test_randaug_changes_images_and_is_repeatable_under_a_seed():
    t = build_finetune_transform(32, 1.0, 9, False, NIH_MEAN, NIH_STD)
    plain = build_finetune_transform(32, 1.0, 0, False, NIH_MEAN, NIH_STD)
    _seed(3)
    a = torch.stack([t(IMAGE) for _ in range(8)])
    _seed(3)
    b = torch.stack([t(IMAGE) for _ in range(8)])
    assert torch.equal(a, b)
    assert sum(not torch.equal(a[i], plain(IMAGE)) for i in range(8)) >= 4


def test_eval_resizes_then_centre_crops():
    img = np.full((64, 64), 50, np.uint8)
    img[:, :3] = img[:, -3:] = img[:3] = img[-3:] = 250  # a 3 px frame, 4 px lost per side at 64 -> 56
    x = build_eval_transform(56, 0.0 + 1e-6, 1.0, in_chans=1)(img)
    assert x.shape == (1, 56, 56)
    assert torch.allclose(x, torch.full_like(x, 50 / 255), atol=0.02)  # the frame is cropped away


def test_rejects_non_gray_input():
    with pytest.raises(DataError, match="uint8"):
        build_eval_transform(32, NIH_MEAN, NIH_STD)(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("magnitude", [9, 10])
def test_high_randaug_magnitudes_never_posterize_to_zero_bits(magnitude):
    # timm's inc1 posterize at level 10 asks PIL for 0 bits; our transform clips the drawn level below 10
    t = build_finetune_transform(32, 0.08, magnitude, False, NIH_MEAN, NIH_STD)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert t(rng.integers(0, 256, (32, 32), dtype=np.uint8)).shape == (3, 32, 32)


def test_randaug_magnitude_beyond_timms_scale_is_an_error():
    with pytest.raises(DataError, match="randaug_magnitude=11"):
        build_finetune_transform(32, 0.08, 11, False, NIH_MEAN, NIH_STD)
