"""One shard of the prepared store: decoding + fitting its images, and its Arrow IPC file.

A shard is an uncompressed Arrow IPC file holding one record batch: `image` (large binary: the
height*width uint8 pixels of one image, row-major), `height` / `width` (int32), `half` / `half_height`
/ `half_width` (the same image at half that resolution, empty with sides 0 when none is kept),
`labels` / `mask` (fixed-size lists of K float32 / uint8), `image_id`, `patient_id`, `split`. Images
keep their aspect ratio; their shorter side is at most the store's `size` (datasets/resolution.py). An
image larger than `size` also keeps a half-resolution copy, resized from the original: crops that
have at least the output's pixels across in it are read from there (datasets/transforms.py), a store
that holds the original keeps none. Uncompressed IPC means `pa.memory_map` hands out the pixel
buffers without a copy. The schema metadata (key META_KEY)
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
from thoraxmae.datasets.output import reason

FORMAT_VERSION = 2
META_KEY = b"thoraxmae"
READERS = ("image", "dicom")
RESIZE_NOTE = ("shorter side scaled down to `size` px when larger (bicubic, antialiased), aspect ratio kept, "
               "plus a copy at `size` // 2 px from the original; smaller images are stored as they are "
               "(never upscaled)")


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W] -> uint8 [h, w] with min(h, w) = min(size, H, W): the shorter side scaled down to
    `size` when longer (the longer one to int(size * long / short), torchvision's Resize rounding); a
    smaller image is returned unchanged, so the store holds the original pixels."""
    h, w = img.shape
    if min(h, w) <= size:
        return np.ascontiguousarray(img, dtype=np.uint8)
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    return np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.uint8)


Levels = tuple[np.ndarray, np.ndarray | None]  # (image, its half-resolution copy or None)


def levels(img: np.ndarray, size: int) -> Levels:
    """The stored copies of a decoded original: fitted to `size`, and, when that shrank it, to size // 2."""
    full = fit(img, size)
    return full, (fit(img, size // 2) if full.shape != img.shape else None)


def decode(path: str, reader: str, size: int) -> Levels:
    """One file -> its stored copies (raises DataError naming the file)."""
    if reader == "image":
        from thoraxmae.datasets.images import load_gray

        return levels(load_gray(path, min_side=size), size)
    if reader == "dicom":
        from thoraxmae.datasets.sources.dicom import read_dicom

        return levels(read_dicom(path), size)
    raise DataError(f"{path}: unknown reader {reader!r}; expected one of {READERS}")


def decode_chunk(paths: list[str], readers: list[str],
                 size: int) -> tuple[list[Levels], list[tuple[int, str]]]:
    """Decode a chunk of files (runs in a pool worker). Returns (the images that decoded, in order;
    [(position in the chunk, reason)] of those that did not)."""
    pixels: list[Levels] = []
    failed: list[tuple[int, str]] = []
    for i, (path, reader) in enumerate(zip(paths, readers, strict=True)):
        try:
            pixels.append(decode(path, reader, size))
        except DataError as e:
            failed.append((i, str(e)))
    return pixels, failed


@dataclass
class ShardData:
    """The rows of one shard that decoded, plus those that did not."""

    pixels: list[Levels]  # n images, uint8 [h_i, w_i], and their half-resolution copies (or None)
    labels: np.ndarray  # [n, K] float32
    mask: np.ndarray  # [n, K] uint8
    image_ids: list[str]
    patient_ids: list[str]
    splits: list[str]
    failed: list[dict] = field(default_factory=list)  # {"image_id", "path", "reason"}


def _digest(pixel_bytes, half_bytes, sides: np.ndarray, labels: np.ndarray, mask: np.ndarray,
            ids: list[str]) -> str:
    h = hashlib.sha256()
    h.update(pixel_bytes)
    h.update(half_bytes)
    for part in (sides.astype(np.int32), labels.astype(np.float32), mask.astype(np.uint8)):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update("\n".join(ids).encode())
    return h.hexdigest()


def _binary_column(images: list[np.ndarray | None]) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(large-binary column of the images' pixels, an empty value for None; [n, 2] int32 sides; the bytes)."""
    sides = np.array([p.shape if p is not None else (0, 0) for p in images], np.int32).reshape(-1, 2)
    offsets = np.zeros(len(images) + 1, np.int64)
    np.cumsum(sides[:, 0].astype(np.int64) * sides[:, 1], out=offsets[1:])
    parts = [p.reshape(-1) for p in images if p is not None]
    data = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    column = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(images), [None, pa.py_buffer(offsets),
                                                                               pa.py_buffer(data)])
    return column, sides, data


def _int32(values: np.ndarray) -> pa.Array:
    return pa.array(np.ascontiguousarray(values, dtype=np.int32), pa.int32())


def write_shard(path: Path, d: ShardData, key: str) -> dict:
    """Write the shard atomically (temp file, then rename). Returns its metadata (with the content hash)."""
    k = d.labels.shape[1]
    image, sides, data = _binary_column([full for full, _ in d.pixels])
    half, half_sides, half_data = _binary_column([h for _, h in d.pixels])
    sha = _digest(memoryview(data), memoryview(half_data), np.concatenate([sides, half_sides], axis=1),
                  d.labels,
                  d.mask, d.image_ids + d.patient_ids + d.splits)
    meta = {"format_version": FORMAT_VERSION, "key": key, "rows": len(d.image_ids), "sha256": sha,
            "failed": d.failed}
    columns = {
        "image": image, "height": _int32(sides[:, 0]), "width": _int32(sides[:, 1]),
        "half": half, "half_height": _int32(half_sides[:, 0]), "half_width": _int32(half_sides[:, 1]),
        "labels": pa.FixedSizeListArray.from_arrays(pa.array(d.labels.reshape(-1), pa.float32()), k),
        "mask": pa.FixedSizeListArray.from_arrays(pa.array(d.mask.reshape(-1), pa.uint8()), k),
        "image_id": pa.array(d.image_ids, pa.string()),
        "patient_id": pa.array(d.patient_ids, pa.string()),
        "split": pa.array(d.splits, pa.string()),
    }
    batch = pa.RecordBatch.from_pydict(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(path.name + ".tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a folder made read-only since: no partial shard is left
        tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write store shard ({reason(exc)})") from None
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
class Pixels:
    """One large-binary pixel column, memory-mapped: `get(j)` is a zero-copy [h, w] uint8 view (None when
    the row holds no image)."""

    data: np.ndarray  # uint8, the pixel bytes of all rows
    offsets: np.ndarray  # [n + 1] int64 positions in `data`
    sides: np.ndarray  # [n, 2] int32 (height, width), (0, 0) for an empty row

    def get(self, j: int) -> np.ndarray | None:
        h, w = int(self.sides[j, 0]), int(self.sides[j, 1])
        return self.data[self.offsets[j]:self.offsets[j + 1]].reshape(h, w) if h else None

    def bytes(self) -> memoryview:
        return memoryview(self.data[self.offsets[0]:self.offsets[-1]])


@dataclass
class ShardView:
    """A memory-mapped shard: `image(j)` / `half(j)` are zero-copy [h, w] uint8 views of the file."""

    full: Pixels
    halves: Pixels
    table: pa.Table
    meta: dict

    def __len__(self) -> int:
        return len(self.full.sides)

    @property
    def heights(self) -> np.ndarray:
        return self.full.sides[:, 0]

    @property
    def widths(self) -> np.ndarray:
        return self.full.sides[:, 1]

    def image(self, j: int) -> np.ndarray:
        return self.full.get(j)

    def half(self, j: int) -> np.ndarray | None:
        return self.halves.get(j)


def _pixels(table: pa.Table, column: str, sides: tuple[str, str], path: Path) -> Pixels:
    col, n = table.column(column), table.num_rows
    if col.type != pa.large_binary():
        raise DataError(f"{path}: {column} column is {col.type}, expected large_binary; re-run `thoraxmae "
                        "data prepare`")
    hw = np.stack([table.column(s).to_numpy().astype(np.int32) for s in sides], axis=1).reshape(n, 2)
    if n == 0:
        return Pixels(np.empty(0, np.uint8), np.zeros(1, np.int64), hw)
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offsets = np.frombuffer(chunk.buffers()[1], np.int64, count=n + 1, offset=chunk.offset * 8)
    data = (np.frombuffer(chunk.buffers()[2], np.uint8) if chunk.buffers()[2] is not None
            else np.empty(0, np.uint8))
    if (np.any(np.diff(offsets) != hw[:, 0].astype(np.int64) * hw[:, 1])
            or offsets[0] < 0 or offsets[-1] > len(data)):
        raise DataError(f"{path}: image sizes do not match the stored pixels (damaged shard); "
                        "re-run `thoraxmae data prepare`")
    return Pixels(data, offsets, hw)


def open_shard(path: Path) -> ShardView:
    """Open a shard file (DataError naming it when it is unreadable or inconsistent)."""
    try:
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
        full = _pixels(table, "image", ("height", "width"), path)
        halves = _pixels(table, "half", ("half_height", "half_width"), path)
    except (pa.ArrowInvalid, OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: cannot read store shard ({e}); re-run `thoraxmae data prepare`") from e
    return ShardView(full, halves, table, meta)


def shard_digest(view: ShardView) -> str:
    """The hash of a shard's contents as read from its file (equal to `write_shard`'s for an intact file)."""
    ids = [view.table.column(c).to_pylist() for c in ("image_id", "patient_id", "split")]
    k = view.table.column("labels").type.list_size
    labels = fixed_list(view.table.column("labels"), np.float32, k)
    mask = fixed_list(view.table.column("mask"), np.uint8, k)
    sides = np.concatenate([view.full.sides, view.halves.sides], axis=1)
    return _digest(view.full.bytes(), view.halves.bytes(), sides, labels, mask, ids[0] + ids[1] + ids[2])


def fixed_list(col: pa.ChunkedArray, dtype: type, k: int) -> np.ndarray:
    """A fixed-size-list column -> [n, k] numpy array."""
    values = (np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in col.chunks])
              if col.num_chunks else np.empty(0))
    return values.astype(dtype, copy=False).reshape(-1, k)
