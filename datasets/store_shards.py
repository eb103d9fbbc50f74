"""One shard of the prepared store: decoding + fitting its images, and its Arrow IPC file.

A shard is an uncompressed Arrow IPC file holding one record batch: `image` (large binary: the
height*width uint8 pixels of one image, row-major), `height` / `width` (int32), `labels` / `mask`
(fixed-size lists of K float32 / uint8), `image_id`, `patient_id`, `split`. Images keep their aspect
ratio; their shorter side is at most the store's `size` (datasets/resolution.py). Uncompressed IPC
means `pa.memory_map` hands out the pixel buffer without a copy. The schema metadata (key META_KEY)
records the format version, the shard's input key (for resuming), the hash of its contents
(`shard_digest`, recomputed from the file when a run resumes) and the images that failed to decode.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from thoraxmae.datasets.errors import DataError

FORMAT_VERSION = 2
META_KEY = b"thoraxmae"
READERS = ("image", "dicom")
RESIZE_NOTE = ("shorter side scaled down to `size` px when larger (bicubic, antialiased), aspect ratio kept; "
               "smaller images are stored as they are (never upscaled)")


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [h, w] with min(h, w) = min(size, H, W): the shorter side scaled down to
    `size` when longer (the longer one to int(size * long / short), torchvision's Resize rounding); a
    smaller image is returned unchanged, so the store holds the original pixels."""
    h, w = img.shape
    if min(h, w) <= size:
        return np.ascontiguousarray(img, dtype=np.uint8)
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    return np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.uint8)


def decode(path: str, reader: str, size: int) -> np.ndarray:
    """One file -> uint8 [h, w] (raises DataError naming the file)."""
    if reader == "image":
        from thoraxmae.datasets.images import load_gray

        return fit(load_gray(path, min_side=size), size)
    if reader == "dicom":
        from thoraxmae.datasets.sources.dicom import read_dicom

        return fit(read_dicom(path), size)
    raise DataError(f"{path}: unknown reader {reader!r}; expected one of {READERS}")


def decode_chunk(paths: list[str], readers: list[str], size: int) -> tuple[list[np.ndarray], list[tuple[int, str]]]:
    """Decode a chunk of files (runs in a pool worker). Returns (the images that decoded, in order;
    [(position in the chunk, reason)] of those that did not)."""
    pixels: list[np.ndarray] = []
    failed: list[tuple[int, str]] = []
    for i, (path, reader) in enumerate(zip(paths, readers)):
        try:
            pixels.append(decode(path, reader, size))
        except DataError as e:
            failed.append((i, str(e)))
    return pixels, failed


@dataclass
class ShardData:
    """The rows of one shard that decoded, plus those that did not."""

    pixels: list[np.ndarray]  # n images, uint8 [h_i, w_i]
    labels: np.ndarray  # [n, K] float32
    mask: np.ndarray  # [n, K] uint8
    image_ids: list[str]
    patient_ids: list[str]
    splits: list[str]
    failed: list[dict] = field(default_factory=list)  # {"image_id", "path", "reason"}


def _digest(pixel_bytes, heights: np.ndarray, widths: np.ndarray, labels: np.ndarray, mask: np.ndarray,
            ids: list[str]) -> str:
    h = hashlib.sha256()
    h.update(pixel_bytes)
    for part in (heights.astype(np.int32), widths.astype(np.int32), labels.astype(np.float32), mask.astype(np.uint8)):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update("\n".join(ids).encode())
    return h.hexdigest()


def write_shard(path: Path, d: ShardData, key: str) -> dict:
    """Write the shard atomically (temp file, then rename). Returns its metadata (with the content hash)."""
    n, k = len(d.image_ids), d.labels.shape[1]
    heights = np.array([p.shape[0] for p in d.pixels], np.int32)
    widths = np.array([p.shape[1] for p in d.pixels], np.int32)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(heights.astype(np.int64) * widths, out=offsets[1:])
    data = np.concatenate([p.reshape(-1) for p in d.pixels]) if n else np.empty(0, np.uint8)
    sha = _digest(memoryview(data), heights, widths, d.labels, d.mask, d.image_ids + d.patient_ids + d.splits)
    meta = {"format_version": FORMAT_VERSION, "key": key, "rows": n, "sha256": sha, "failed": d.failed}
    columns = {
        "image": pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets),
                                                                           pa.py_buffer(data)]),
        "height": pa.array(heights, pa.int32()),
        "width": pa.array(widths, pa.int32()),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(d.labels.reshape(-1), pa.float32()), k),
        "mask": pa.FixedSizeListArray.from_arrays(pa.array(d.mask.reshape(-1), pa.uint8()), k),
        "image_id": pa.array(d.image_ids, pa.string()),
        "patient_id": pa.array(d.patient_ids, pa.string()),
        "split": pa.array(d.splits, pa.string()),
    }
    batch = pa.RecordBatch.from_pydict(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    os.replace(tmp, path)
    return meta


def shard_meta(path: Path) -> dict | None:
    """The metadata of a complete shard file, or None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with pa.memory_map(str(path), "r") as source:
            schema = pa.ipc.open_file(source).schema
        raw = (schema.metadata or {}).get(META_KEY)
        return json.loads(raw) if raw else None
    except (pa.ArrowInvalid, OSError, ValueError):
        return None


@dataclass
class ShardView:
    """A memory-mapped shard: `image(j)` is a zero-copy [h, w] uint8 view of the file."""

    data: np.ndarray  # uint8, the pixel bytes of all images
    offsets: np.ndarray  # [n + 1] int64 positions in `data`
    heights: np.ndarray  # [n] int32
    widths: np.ndarray  # [n] int32
    table: pa.Table
    meta: dict

    def __len__(self) -> int:
        return len(self.heights)

    def image(self, j: int) -> np.ndarray:
        return self.data[self.offsets[j]:self.offsets[j + 1]].reshape(int(self.heights[j]), int(self.widths[j]))


def open_shard(path: Path) -> ShardView:
    """Open a shard file (DataError naming it when it is unreadable or inconsistent)."""
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        col, n = table.column("image"), table.num_rows
        heights = table.column("height").to_numpy().astype(np.int32)
        widths = table.column("width").to_numpy().astype(np.int32)
    except (pa.ArrowInvalid, OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: cannot read store shard ({e}); re-run `thoraxmae data prepare`") from e
    if col.type != pa.large_binary():
        raise DataError(f"{path}: image column is {col.type}, expected large_binary; re-run `thoraxmae data prepare`")
    if n == 0:
        return ShardView(np.empty(0, np.uint8), np.zeros(1, np.int64), heights, widths, table, meta)
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offsets = np.frombuffer(chunk.buffers()[1], np.int64, count=n + 1, offset=chunk.offset * 8)
    data = np.frombuffer(chunk.buffers()[2], np.uint8)
    sizes = heights.astype(np.int64) * widths
    if np.any(np.diff(offsets) != sizes) or offsets[0] < 0 or offsets[-1] > len(data):
        raise DataError(f"{path}: image sizes do not match the stored pixels (damaged shard); "
                        "re-run `thoraxmae data prepare`")
    return ShardView(data, offsets, heights, widths, table, meta)


def shard_digest(view: ShardView) -> str:
    """The hash of a shard's contents as read from its file (equal to `write_shard`'s for an intact file)."""
    ids = [view.table.column(c).to_pylist() for c in ("image_id", "patient_id", "split")]
    k = view.table.column("labels").type.list_size
    labels = fixed_list(view.table.column("labels"), np.float32, k)
    mask = fixed_list(view.table.column("mask"), np.uint8, k)
    pixels = memoryview(view.data[view.offsets[0]:view.offsets[-1]])
    return _digest(pixels, view.heights, view.widths, labels, mask, ids[0] + ids[1] + ids[2])


def fixed_list(col: pa.ChunkedArray, dtype: type, k: int) -> np.ndarray:
    """A fixed-size-list column -> [n, k] numpy array."""
    values = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in col.chunks]) if col.num_chunks \
        else np.empty(0)
    return values.astype(dtype, copy=False).reshape(-1, k)
