"""load_gray: every PNG/JPEG flavour a dataset ships becomes uint8 gray; bad files name themselves."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.images import load_gray, scale_integer

RAMP = np.arange(256, dtype=np.uint8).reshape(16, 16)


def _save(tmp_path, array_or_image, name="x.png", **kw):
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_gray_png_round_trips(tmp_path):
    out = load_gray(_save(tmp_path, RAMP))
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, RAMP)


def test_rgb_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[1, 1] = (200, 200, 200)
    out = load_gray(_save(tmp_path, rgb))
    np.testing.assert_array_equal(out, [[76, 150], [29, 200]])  # ITU-R 601-2 luma, as PIL's "L"


def test_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([RAMP, RAMP, RAMP, np.full_like(RAMP, 255)])
    path = _save(tmp_path, rgba)
    assert Image.open(path).mode == "RGBA"
    np.testing.assert_array_equal(load_gray(path), RAMP)


def test_palette_image(tmp_path):
    path = _save(tmp_path, Image.fromarray(RAMP).convert("P"))
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(load_gray(path), RAMP)


@pytest.mark.parametrize("top, expected_max", [(65535, 255), (4095, 255), (1023, 255), (200, 200)])
def test_16_bit_png_is_scaled_to_its_bit_depth(tmp_path, top, expected_max):
    a = np.linspace(0, top, 64).astype(np.uint16).reshape(8, 8)
    path = _save(tmp_path, a)
    assert Image.open(path).mode in ("I;16", "I")
    out = load_gray(path)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == expected_max
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone


def test_12_bit_mid_grey_stays_mid_grey():
    out = scale_integer(np.array([[0, 2048, 4095]], np.int32), path=None)
    np.testing.assert_array_equal(out, [[0, 128, 255]])


def test_jpeg_with_min_side_decodes_small_but_not_too_small(tmp_path):
    big = np.tile(np.arange(512, dtype=np.uint16).astype(np.uint8), (512, 1))
    path = _save(tmp_path, big, "x.jpg", quality=95)
    assert load_gray(path).shape == (512, 512)
    reduced = load_gray(path, min_side=100)
    assert 100 <= min(reduced.shape) < 512


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="nothere.png.*not found"):
        load_gray(tmp_path / "nothere.png")


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(DataError, match="garbage.png"):
        load_gray(path)


def test_not_an_image_names_it(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty.png"):
        load_gray(path)


def test_truncated_png_names_it(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    data = _save(tmp_path, noisy, "full.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_gray(path)
