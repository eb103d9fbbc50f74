"""Store resolution: how many pixels a store keeps per image, and how much of the reference's detail a
training crop from it keeps (docs/paper.md, "the reference crops the original image").

The reference crops the ORIGINAL image (NIH: 1024 px) and resizes the crop to the model's input. A crop
of area fraction s holds s**0.5 * side source pixels per side (square crop; an aspect ratio r scales the
width by r**0.5 and the height by r**-0.5). Resized to `output` px, a crop carries min(its source pixels,
output) pixels of detail per side, so a crop of the same scale from a store of side S keeps

    detail_kept = min(s**0.5 * S, output) / min(s**0.5 * source, output)

of the reference's detail. The default store side keeps >= 0.9 of it at every crop scale the paper
uses (fine-tuning crops down to 0.08: 0.97; pre-training to 0.5: 1.0). `store_detail_warning` is the
line a run prints, before Ray starts, when a store is below that side for the spec's smallest crop_min.

Counting pixels ignores the resampling filter: datasets/fine_detail.py measures the high-frequency energy a
crop keeps. An image that shrank to fit also keeps a half-resolution copy; crops with at least
HALF_COPY_MARGIN (2x) the output's pixels across in it are read from there, where they keep >= 0.98 of the
reference's fine detail (datasets/transforms.py; benchmarks/crop_detail.py, benchmarks/loader.py). Disk:
1.25 bytes per pixel of the fitted image, 73.7 GB per 100,000 NIH images at 768 px.
"""
from __future__ import annotations

import math

from thoraxmae.datasets.errors import DataError

DEFAULT_SIZE = 768  # shorter side of a stored image, at most (smaller originals are kept as they are)
DEFAULT_STORE_SIZE = DEFAULT_SIZE  # the name the package exports
MIN_SIZE, MAX_SIZE = 8, 4096  # a store side outside this range is a typo, not a request
REFERENCE_SOURCE = 1024  # NIH ChestX-ray14 originals, what the reference crops from
PAPER_CROP_MINS = {"fine-tuning": 0.08, "pre-training": 0.5}  # docs/paper.md


def check_size(size: int, what: str = "size") -> int:
    """`size` if it is a sane store side, else a one-line DataError (before anything is allocated)."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"{what}={size!r}: a store's image side must be an integer in [{MIN_SIZE}, "
                        f"{MAX_SIZE}] px (default {DEFAULT_SIZE})")
    return size


def detail_kept(scale: float, store: int, source: int = REFERENCE_SOURCE, output: int = 224,
                aspect: float = 1.0) -> float:
    """The fraction of the reference's detail a crop of area fraction `scale` from a `store`-px copy keeps
    along the axis the aspect ratio `aspect` (width / height) stretches (1.0: a square crop, both axes)."""
    if not 0 < scale <= 1:
        raise DataError(f"crop scale {scale} must lie in (0, 1]")
    side = math.sqrt(scale * aspect)
    return min(side * min(store, source), output) / min(side * source, output)


def smallest_store(scale: float, keep: float = 0.9, source: int = REFERENCE_SOURCE, output: int = 224) -> int:
    """The smallest store side whose square crops of `scale` keep at least `keep` of the reference's
    detail."""
    need = keep * min(math.sqrt(scale) * source, output) / math.sqrt(scale)
    return min(source, math.ceil(need - 1e-9))


def store_detail_warning(store: object, manifest: dict, crop_min: float, output: int, what: str,
                         keep: float = 0.9) -> str | None:
    """One line when the store at `store` (its `manifest`) shrank its images below the side whose crops of
    scale `crop_min` keep `keep` of the reference's detail at `output` px; None when it keeps enough.

    A store that shrank no image (`half_copies` 0) holds the originals, which is the reference itself."""
    size, need = int(manifest["size"]), smallest_store(crop_min, keep, REFERENCE_SOURCE, output)
    if size >= need or manifest.get("half_copies", 1) == 0:
        return None
    kept = detail_kept(crop_min, size, REFERENCE_SOURCE, output)
    return (f"{store}: images stored at {size} px, below the {need} px that keeps >= {keep:g} of the "
            f"reference's detail for {what} crops down to crop_min={crop_min:g} at {output} px (this store "
            f"keeps {kept:.2f}; docs/paper.md \"Crops and stored resolution\"); re-prepare it with "
            f"`thoraxmae data prepare ... --size {max(need, DEFAULT_SIZE)}`")
