"""Fine detail (datasets/fine_detail.py), the half copy's margin that keeps it (datasets/transforms.py), and
the
store-size warning (datasets/resolution.py store_detail_warning), on a real radiograph where pixels matter."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.fine_detail import fine_detail_kept, high_frequency_energy, resized_crop, scaled_box
from thoraxmae.datasets.resolution import smallest_store, store_detail_warning
from thoraxmae.datasets.store_shards import levels
from thoraxmae.datasets.transforms import (
    HALF_COPY_MARGIN,
    RandomResizedCrop,
    build_eval_transform,
    crop_scale,
)


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    """uint8 [1024, 1024]: pydicom-data's real PA chest radiograph (docs/data-formats.md "DICOM"), squared and
    resized to the NIH originals' side, plus sensor-like noise (sigma 3 gray levels, seeded)."""
    pydicom_data = pytest.importorskip("pydicom.data")
    from thoraxmae.datasets.sources.dicom import read_dicom

    img = read_dicom(pydicom_data.get_testdata_file("RG1_UNCR.dcm", download=False))
    h, w = img.shape
    s = min(h, w)
    square = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    big = np.asarray(Image.fromarray(square).resize((1024, 1024), Image.Resampling.BICUBIC), np.float64)
    return np.clip(big + np.random.default_rng(0).normal(0, 3, big.shape), 0, 255).astype(np.uint8)


def test_high_frequency_energy_is_the_mean_squared_laplacian():
    assert high_frequency_energy(np.full((8, 8), 200, np.uint8)) == 0.0
    checker = (np.indices((6, 6)).sum(0) % 2).astype(np.uint8)  # 0/1: every interior Laplacian is +-4
    assert high_frequency_energy(checker) == 16.0
    with pytest.raises(DataError, match=r"at least 3x3"):
        high_frequency_energy(np.zeros((2, 9), np.uint8))


def test_fine_detail_kept_is_one_for_the_reference_and_refuses_a_flat_one():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    assert fine_detail_kept(img, img) == 1.0
    blurred = np.asarray(Image.fromarray(img).resize((16, 16), Image.Resampling.BICUBIC).resize((32, 32)))
    assert fine_detail_kept(blurred, img) < 0.5
    with pytest.raises(DataError, match="flat"):
        fine_detail_kept(img, np.zeros_like(img))
    with pytest.raises(DataError, match="differ in shape"):
        fine_detail_kept(img, img[:16])


def _kept(original: np.ndarray, copy: np.ndarray, box: tuple, output: int) -> float:
    """Fine detail kept by `box` (in the 768 copy's coordinates) read from `copy`, vs the reference."""
    reference = resized_crop(original, scaled_box(box, 1024 / 768), output)
    return fine_detail_kept(resized_crop(copy, scaled_box(box, copy.shape[0] / 768), output), reference)


def test_the_half_copy_softens_crops_below_twice_the_output_and_keeps_098_above(radiograph):
    full, half = levels(radiograph, 768)  # [768, 768] and [384, 384], as a store keeps them
    assert full.shape == (768, 768) and half.shape == (384, 384)
    near = (100.0, 200.0, 100.0 + 2 * 240, 200.0 + 2 * 240)  # 240 px across in the half copy: 1.07x of 224
    # the 768 copy: 2.1x the output
    assert _kept(radiograph, full, near, 224) == pytest.approx(0.974, abs=0.005)
    # the half copy at 1.07x: softer
    assert _kept(radiograph, half, near, 224) == pytest.approx(0.804, abs=0.005)
    # the same boxes at 112 px output: 2.14x in the half copy
    wide = (50.0, 60.0, 50.0 + 2 * 240, 60.0 + 2 * 240)
    assert _kept(radiograph, half, wide, 112) == pytest.approx(0.981, abs=0.005)
    assert HALF_COPY_MARGIN == 2.0


def test_crops_the_transform_reads_from_the_half_copy_keep_098_of_the_fine_detail(radiograph):
    full, half = levels(radiograph, 768)
    out = 112  # the half copy (384 px) holds >= 2x this output for crops of scale >= ~0.34
    crop = RandomResizedCrop(out, crop_scale(0.08))
    kept, used_half = [], 0
    for seed in range(60):
        random.seed(seed)
        box = crop.box(768, 768)
        random.seed(seed)
        image = np.asarray(crop(Image.fromarray(full), Image.fromarray(half)))  # what the loader hands on
        if min(box[2] - box[0], box[3] - box[1]) / 2 >= HALF_COPY_MARGIN * out:
            used_half += 1
            assert np.array_equal(image, resized_crop(half, scaled_box(box, 0.5), out))
            kept.append(_kept(radiograph, half, box, out))
        else:
            assert np.array_equal(image, np.asarray(Image.fromarray(full).crop(box).resize((out, out),
                                                                                          Image.Resampling.BICUBIC)))
    assert used_half >= 15 and np.mean(kept) >= 0.98 and min(kept) >= 0.96


def test_eval_at_224_reads_the_768_copy_not_the_half_copy(radiograph):
    full, half = levels(radiograph, 768)
    t = build_eval_transform(224, 0.5, 0.25, in_chans=1)  # resize to 256: the 384 half copy holds 1.5x
    assert torch.equal(t(full, half), t(full))


def test_store_size_warning_names_the_store_its_size_and_the_size_needed():
    assert smallest_store(0.08) == 713 and smallest_store(0.5) == 286
    line = store_detail_warning("/data/nih256", {"size": 256, "half_copies": 9}, 0.08, 224, "fine-tuning")
    assert line == ("/data/nih256: images stored at 256 px, below the 713 px that keeps >= 0.9 of the "
                    "reference's detail for fine-tuning crops down to crop_min=0.08 at 224 px (this store "
                    "keeps 0.32; docs/paper.md \"Crops and stored resolution\"); re-prepare it with "
                    "`thoraxmae data prepare ... --size 768`")
    pre = store_detail_warning("s3://b/cxr224", {"size": 224, "half_copies": 9}, 0.5, 224, "pre-training")
    assert pre is not None and "below the 286 px" in pre and "keeps 0.71" in pre
    assert store_detail_warning("/data/nih768", {"size": 768, "half_copies": 9}, 0.08, 224,
                                "fine-tuning") is None
    assert store_detail_warning("/data/cxr320", {"size": 320, "half_copies": 9}, 0.5, 224,
                                "pre-training") is None
    # a store that shrank nothing holds the originals: that is the reference's detail, whatever its cap
    assert store_detail_warning("/data/small", {"size": 256, "half_copies": 0}, 0.08, 224,
                                "fine-tuning") is None
    # a smaller model input needs fewer pixels: 112 px output at crop_min 0.08 needs 357 px
    assert "below the 357 px" in store_detail_warning("x", {"size": 256, "half_copies": 1}, 0.08, 112,
                                                      "fine-tuning")


def test_per_channel_statistics_normalise_each_channel_as_timm_does_on_the_rgb_copy():
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import transforms as T

    from thoraxmae.datasets.config import IMAGENET_MEAN, IMAGENET_STD

    assert (IMAGENET_MEAN, IMAGENET_STD) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    img = np.random.default_rng(2).integers(0, 256, (80, 90)).astype(np.uint8)
    ours = build_eval_transform(64, IMAGENET_MEAN, IMAGENET_STD, in_chans=3)(img)  # [3, 64, 64]
    ref = T.Compose([T.Resize(73, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(64), T.ToTensor(),
                     T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(Image.fromarray(img).convert("RGB"))
    assert ours.shape == (3, 64, 64)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)
    assert float((ours[0] - ours[2]).abs().max()) > 0.1  # the channels really differ
    with pytest.raises(DataError, match=r"mean=\(0.485, 0.456, 0.406\) has 3 values; the model reads 1 "
                                        r"channel"):
        build_eval_transform(64, IMAGENET_MEAN, IMAGENET_STD, in_chans=1)
