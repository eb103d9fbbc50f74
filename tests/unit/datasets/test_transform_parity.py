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
        assert ((top, left, bottom - top, right - left)
                == T.RandomResizedCrop.get_params(pil, [0.5, 1.0], [3 / 4, 4 / 3]))


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
    for a, b in zip(ours.ops, ref.ops, strict=True):
        assert ((a.aug_fn, a.level_fn, a.prob, a.magnitude, a.magnitude_std)
                == (b.aug_fn, b.level_fn, b.prob, b.magnitude, b.magnitude_std)
                == (a.aug_fn, a.level_fn, 0.5, 6, 0.5))
        # one gray fill level where the reference has (129, 129, 129); the same translate / resampling
        assert (a.kwargs["fillcolor"],) * 3 == b.kwargs["fillcolor"] == (129, 129, 129)
        assert a.kwargs["resample"] == b.kwargs["resample"] and a.hparams["translate_const"] == 100


@pytest.mark.parametrize("crop_min", [0.08, 0.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_finetune_transform_equals_timms_create_transform(shape, crop_min):
    img = xray(*shape)
    ours = build_finetune_transform(64, crop_min, 6, True, NIH_MEAN, NIH_STD)
    ref = reference_finetune(64, crop_min, 6)
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
    ours = build_finetune_transform(64, 0.08, 6, False, NIH_MEAN, NIH_STD)
    ref = reference_finetune(64, 0.08, 6, 0.0)
    for s in range(20):
        seed_all(s)
        a = ours(img)
        seed_all(s)
        assert gray_diff(a, ref(Image.fromarray(img).convert("RGB"))) < 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_pretrain_transform_equals_torchvisions(shape):
    img = xray(*shape)
    ours = build_pretrain_transform(64, 0.5, True, NIH_MEAN, NIH_STD)
    ref = T.Compose([T.RandomResizedCrop(64, scale=(0.5, 1.0), interpolation=BICUBIC),
                     T.RandomHorizontalFlip(),
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


def test_big_crops_read_the_half_copy_small_crops_the_image(tmp_path):
    """With a half-resolution copy, the same boxes are drawn; a box with >= HALF_COPY_MARGIN x img_size px
    across in the copy is resampled from it (bicubic, box scaled), any other from the image exactly as
    without the copy."""
    from thoraxmae.datasets.store_shards import fit
    from thoraxmae.datasets.transforms import HALF_COPY_MARGIN

    assert HALF_COPY_MARGIN == 2.0
    original = xray(256, 256)
    full, half = fit(original, 128), fit(original, 64)
    crop = RandomResizedCrop(16, crop_scale(0.08))
    ours = build_finetune_transform(16, 0.08, 0, False, 0.5, 0.5, in_chans=1)
    used_half = 0
    for s in range(60):
        seed_all(s)
        left, top, right, bottom = crop.box(128, 128)
        seed_all(s)
        a = ours(full, half)
        state = random.getstate()
        seed_all(s)
        b = ours(full)
        assert random.getstate() == state  # the copy changes no random draw
        if min(right - left, bottom - top) * 0.5 >= 2 * 16:
            used_half += 1
            box = (left / 2, top / 2, right / 2, bottom / 2)
            expected = np.asarray(Image.fromarray(half).resize((16, 16), Image.Resampling.BICUBIC, box=box))
            torch.testing.assert_close(a[0], torch.from_numpy(expected / 255.0 * 2 - 1).float(), atol=1e-5,
                                       rtol=0)
            # within about a gray level of the full-size crop
            assert float((a - b).abs().mean()) * 255 / 2 < 1.5
        else:
            assert torch.equal(a, b)
    assert 10 <= used_half <= 50


def test_eval_reads_the_half_copy_when_it_holds_twice_the_pixels():
    from thoraxmae.datasets.store_shards import fit

    original = xray(400, 400)
    full, half = fit(original, 300), fit(original, 150)
    t = build_eval_transform(64, 0.5, 0.5, in_chans=1)  # resizes the shorter side to 73 px first
    expected = np.asarray(Image.fromarray(half).resize((73, 73), Image.Resampling.BICUBIC)
                          .crop((4, 4, 68, 68)))
    torch.testing.assert_close(t(full, half)[0], torch.from_numpy(expected / 255.0 * 2 - 1).float(),
                               atol=1e-5, rtol=0)
    assert float((t(full, half) - t(full)).abs().mean()) * 255 / 2 < 1.0
    small = fit(original, 140)  # 140 < 2 x 73: the half copy would soften it, the image itself is used
    assert torch.equal(t(full, small), t(full))


def test_the_loader_hands_both_copies_to_the_transform(tmp_path):
    import pandas as pd

    from thoraxmae.datasets.loader import StoreDataset
    from thoraxmae.datasets.store import open_store, prepare_store
    from thoraxmae.datasets.table import SourceTable

    rows = []
    for i in range(3):
        Image.fromarray(xray(200, 180, seed=i)).save(tmp_path / f"{i}.png")
        rows.append({"image_id": str(i), "path": str(tmp_path / f"{i}.png"), "patient_id": str(i),
                     "split": "train",
                     "reader": "image"})
    table = SourceTable("t", ("A",), pd.DataFrame(rows), np.zeros((3, 1)), np.ones((3, 1)))
    prepare_store(table, tmp_path / "s", size=96)
    store = open_store(tmp_path / "s")
    t = build_finetune_transform(32, 0.08, 6, True, NIH_MEAN, NIH_STD)
    ds = StoreDataset(store, "train", t)
    for i in range(3):
        full, half = store.levels(i)
        assert half is not None and half.shape == (53, 48)
        seed_all(i)
        a = ds[i][0]
        seed_all(i)
        assert torch.equal(a, t(full, half))
