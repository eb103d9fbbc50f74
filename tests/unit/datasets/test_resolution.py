"""Store resolution: the detail a crop keeps vs the reference's, and the default store side that keeps it."""
from __future__ import annotations

import pytest

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.resolution import (
    DEFAULT_SIZE,
    MAX_SIZE,
    PAPER_CROP_MINS,
    check_size,
    detail_kept,
    smallest_store,
)


@pytest.mark.parametrize("store, expected", [
    (256, (0.323, 0.511, 0.808, 1.0)),  # the old default: small crops lose two thirds of the detail
    (512, (0.646, 1.0, 1.0, 1.0)),
    (768, (0.970, 1.0, 1.0, 1.0)),  # the new default
    (1024, (1.0, 1.0, 1.0, 1.0)),  # the original itself
    (2048, (1.0, 1.0, 1.0, 1.0)),  # more pixels than the original hold no more detail
])
def test_detail_kept_per_crop_scale(store, expected):
    assert tuple(round(detail_kept(s, store), 3) for s in (0.08, 0.2, 0.5, 1.0)) == expected


def test_detail_kept_is_per_axis_for_stretched_crops():
    # a 3:4 crop of scale 0.08 is narrower: sqrt(0.06) * 768 = 188 px of the reference's 224
    assert round(detail_kept(0.08, 768, aspect=3 / 4), 3) == 0.840
    assert detail_kept(0.08, 768, aspect=4 / 3) == 1.0
    assert round(detail_kept(0.5, 320, source=320), 3) == 1.0  # CheXpert-small kept at its own size


def test_default_store_keeps_nine_tenths_at_the_papers_crop_scales():
    for crop_min in PAPER_CROP_MINS.values():
        assert detail_kept(crop_min, DEFAULT_SIZE) >= 0.9
    assert smallest_store(0.08) == 713 and smallest_store(0.5) == 286 and smallest_store(1.0) == 202
    assert max(smallest_store(s) for s in PAPER_CROP_MINS.values()) <= DEFAULT_SIZE


@pytest.mark.parametrize("bad", [0, 7, MAX_SIZE + 1, 100000, 256.0, True, "768"])
def test_check_size_rejects_insane_sides(bad):
    with pytest.raises(DataError, match=rf"^--size={bad!r}: a store's image side must be an integer in \[8, "
                                        r"4096\] px"):
        check_size(bad, "--size")


def test_check_size_accepts_the_range():
    assert check_size(8) == 8 and check_size(MAX_SIZE) == MAX_SIZE and check_size(DEFAULT_SIZE) == 768
    with pytest.raises(DataError, match="crop scale 0 must lie"):
        detail_kept(0, 768)
