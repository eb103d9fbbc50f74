"""Decoding PNG / JPEG radiographs to 8-bit gray (the "image" reader of a SourceTable)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from thoraxmae.datasets.errors import DataError

DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def load_gray(path: Path | str, min_side: int | None = None) -> np.ndarray:
    """One image file -> uint8 [H, W].

    RGB / RGBA / palette images become luminance ("L"; 519 NIH images are RGBA). 16-bit and 32-bit
    integer images ("I;16", "I") are scaled by the smallest 2**b - 1 (b >= 8) that holds their maximum,
    so 12-bit data keeps its contrast; float images ("F") are min-max scaled. `min_side` lets a JPEG
    decoder skip detail (PIL draft mode) as long as both sides stay >= min_side; PNGs decode fully.
    A missing, unreadable, truncated or corrupt file is a DataError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            if min_side is not None and img.format == "JPEG":
                img.draft("L", (min_side, min_side))
            img.load()
            return _to_uint8(img, path)
    except DataError:
        raise
    except DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


def _to_uint8(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode == "L":
        return np.array(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return scale_integer(np.asarray(img), path)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        return (np.zeros(a.shape, np.uint8) if hi <= lo
                else ((a - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8))
    if img.mode in ("RGB", "RGBA", "P", "PA", "LA", "1", "CMYK", "YCbCr", "L;16"):
        return np.array(img.convert("L"), dtype=np.uint8)
    raise DataError(f"{path}: unsupported image mode {img.mode!r}; expected gray, RGB(A) or 16-bit")


def scale_integer(a: np.ndarray, path: Path) -> np.ndarray:
    """Integer pixels -> uint8, divided by the smallest 2**b - 1 >= max (b >= 8)."""
    if a.size and int(a.min()) < 0:
        raise DataError(f"{path}: negative pixel values ({int(a.min())}) in an integer image")
    top = int(a.max()) if a.size else 0
    bits = max(8, top.bit_length())
    full = (1 << bits) - 1
    return ((a.astype(np.float64) * (255.0 / full)) + 0.5).astype(np.uint8)
