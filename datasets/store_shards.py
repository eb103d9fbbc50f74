"""One shard of the prepared store: decoding + squaring its images, and its Arrow IPC file.

A shard is an uncompressed Arrow IPC file holding one record batch: `image` (fixed-size binary of
size*size uint8 pixels, row-major), `labels` / `mask` (fixed-size lists of K float32 / uint8),
`image_id`, `patient_id`, `split`. Uncompressed IPC means `pa.memory_map` hands out the pixel
buffer without a copy. The schema metadata (key META_KEY) records the format version, the shard's
input key (for resuming), its content hash and the images that failed to decode.
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

FORMAT_VERSION = 1
META_KEY = b"thoraxmae"
READERS = ("image", "dicom")
RESIZE_NOTE = "shorter side scaled to `size` (bicubic, antialiased), then centre-cropped to a square"


def square(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [size, size]: keep the aspect ratio, scale the shorter side to `size`,
    centre-crop the longer one (chest radiographs are nearly square, so little is lost). One PIL call:
    the centre square box is resampled straight to the output size."""
    h, w = img.shape
    side = min(h, w)
    left, top = (w - side) / 2, (h - side) / 2
    out = Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


def decode(path: str, reader: str, size: int) -> np.ndarray:
    """One file -> uint8 [size, size] (raises DataError naming the file)."""
    if reader == "image":
        from thoraxmae.datasets.images import load_gray

        return square(load_gray(path, min_side=size), size)
    if reader == "dicom":
        from thoraxmae.datasets.sources.dicom import read_dicom

        return square(read_dicom(path), size)
    raise DataError(f"{path}: unknown reader {reader!r}; expected one of {READERS}")


def decode_chunk(paths: list[str], readers: list[str], size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode a chunk of files (runs in a pool worker). Returns (pixels [m, size, size] uint8 of the
    images that decoded, in order; [(position in the chunk, reason)] of those that did not)."""
    pixels = np.empty((len(paths), size, size), np.uint8)
    ok = np.ones(len(paths), bool)
    failed: list[tuple[int, str]] = []
    for i, (path, reader) in enumerate(zip(paths, readers)):
        try:
            pixels[i] = decode(path, reader, size)
        except DataError as e:
            ok[i] = False
            failed.append((i, str(e)))
    return pixels[ok], failed


@dataclass
class ShardData:
    """The rows of one shard that decoded, plus those that did not."""

    pixels: np.ndarray  # [n, S, S] uint8
    labels: np.ndarray  # [n, K] float32
    mask: np.ndarray  # [n, K] uint8
    image_ids: list[str]
    patient_ids: list[str]
    splits: list[str]
    failed: list[dict] = field(default_factory=list)  # {"image_id", "path", "reason"}


def content_hash(d: ShardData) -> str:
    h = hashlib.sha256()
    for part in (d.pixels, d.labels, d.mask):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update("\n".join(d.image_ids + d.patient_ids + d.splits).encode())
    return h.hexdigest()


def write_shard(path: Path, d: ShardData, key: str) -> dict:
    """Write the shard atomically (temp file, then rename). Returns its metadata."""
    n, size = len(d.image_ids), d.pixels.shape[-1]
    k = d.labels.shape[1]
    pixels = np.ascontiguousarray(d.pixels, dtype=np.uint8)
    meta = {"format_version": FORMAT_VERSION, "key": key, "rows": n, "size": size, "sha256": content_hash(d),
            "failed": d.failed}
    columns = {
        "image": pa.FixedSizeBinaryArray.from_buffers(pa.binary(size * size), n, [None, pa.py_buffer(pixels)]),
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
    except (pa.ArrowInvalid, OSError):
        return None
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else None


@dataclass
class ShardView:
    """A memory-mapped shard: `images` [n, S, S] uint8 is a zero-copy view of the file."""

    images: np.ndarray
    table: pa.Table
    meta: dict


def open_shard(path: Path, size: int) -> ShardView:
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read store shard ({e}); re-run `thoraxmae data prepare`") from e
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    col = table.column("image")
    n = table.num_rows
    if col.type != pa.binary(size * size):
        raise DataError(f"{path}: image column is {col.type}, expected {size}x{size} pixels (manifest size)")
    if n == 0:
        return ShardView(np.empty((0, size, size), np.uint8), table, meta)
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    buf = chunk.buffers()[1]
    images = np.frombuffer(buf, np.uint8, count=n * size * size, offset=chunk.offset * size * size)
    return ShardView(images.reshape(n, size, size), table, meta)


def fixed_list(col: pa.ChunkedArray, dtype: type, k: int) -> np.ndarray:
    """A fixed-size-list column -> [n, k] numpy array."""
    values = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in col.chunks]) if col.num_chunks \
        else np.empty(0)
    return values.astype(dtype, copy=False).reshape(-1, k)
