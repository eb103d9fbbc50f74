"""What a run needs from a store, checked from its manifest alone, before any Ray work:

    check_store_use("store/nih768", [SplitNeed("train", "data.train_split", batch_size=128, workers=2),
                                     SplitNeed("val", "data.val_split")], where="data.store")

- sizes: the store's image side is in range, every shard file is there with the byte size the manifest
  records (stores prepared before `bytes` was recorded: the shard's Arrow footer is read instead, a few
  KB), and the shards' rows add up to the images the manifest counts;
- splits: each split a run reads is a split of the store and holds images, and a training split holds at
  least one full batch per worker (training drops incomplete batches, datasets.loader.make_loader).

A DataError names the field (`where`), the store and what was expected. No pixel is read: the bit-level
check of the shards' contents is datasets.store_verify. An object-store URI is checked through its
remote manifest and the shard objects' sizes (nothing is downloaded).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from thoraxmae.datasets import remote
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.resolution import MAX_SIZE, MIN_SIZE
from thoraxmae.datasets.store_read import MANIFEST, check_store
from thoraxmae.datasets.table import SPLITS

__all__ = ["SplitNeed", "check_store_use"]


@dataclass(frozen=True)
class SplitNeed:
    """One split a run reads: its name, the config field that names it, and, for a training split, the
    per-worker batch (and the workers that share the split) that must fit. batch_size 0: may be empty
    (an optional test split)."""

    split: str
    field: str
    batch_size: int = 1
    workers: int = 1
    batch_field: str = ""  # e.g. "finetune.batch_size"; empty for a split that only has to hold an image

    @property
    def images(self) -> int:
        return self.batch_size * self.workers


def check_store_use(store: Path | str, needs: Iterable[SplitNeed], where: str | None = "data.store") -> dict:
    """The store's manifest, after the size and split checks (module docstring); DataError otherwise,
    starting with `where` (the field that names the store) unless that is None (a caller that adds it)."""
    label = f"{where} ({store})" if where else str(store)
    try:
        manifest = check_store(store)  # present, format version, keys, shard files listed and there
    except DataError as exc:
        raise DataError(f"{where}: {exc}" if where else str(exc)) from None
    _check_sizes(store, manifest, label)
    counts = manifest.get("counts")
    for need in needs:
        _check_split(need, counts, label)
    return manifest


def _check_sizes(store: Path | str, manifest: dict, label: str) -> None:
    size = manifest["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"{label}: {MANIFEST} size={size!r}, expected an image side in [{MIN_SIZE}, "
                        f"{MAX_SIZE}] px; re-run `thoraxmae data prepare`")
    actual = _shard_bytes(store, manifest)
    for entry in manifest["shards"]:
        found, recorded = actual.get(entry["file"]), entry.get("bytes")
        if recorded is not None and found != recorded:
            raise DataError(f"{label}: {entry['file']} is {found} bytes, {MANIFEST} records {recorded} "
                            "(truncated or replaced); re-run `thoraxmae data prepare`")
        if recorded is None and not remote.is_uri(store):
            _check_footer(Path(store) / entry["file"], entry, label)
    rows = sum(int(e.get("rows", 0)) for e in manifest["shards"])
    counts = manifest.get("counts")
    if counts is None:  # a store without counts (an image-less test store): nothing more to compare
        return
    if not isinstance(counts, dict) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                           for v in counts.values()):
        raise DataError(f"{label}: {MANIFEST} counts={counts!r}, expected an image count per split")
    if manifest.get("images", rows) != rows or sum(counts.values()) != rows:
        raise DataError(f"{label}: {MANIFEST} counts {sum(counts.values())} images by split and "
                        f"{manifest.get('images')!r} in all, but its shards hold {rows}; re-run "
                        "`thoraxmae data prepare`")


def _shard_bytes(store: Path | str, manifest: dict) -> dict[str, int]:
    if remote.is_uri(store):
        return remote.shard_sizes(str(store).rstrip("/"), manifest)
    return {e["file"]: (Path(store) / e["file"]).stat().st_size for e in manifest["shards"]}


def _check_footer(path: Path, entry: dict, label: str) -> None:
    """A store prepared before shard sizes were recorded: the Arrow footer is there and counts the rows."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path), "r") as source:
            reader = pa.ipc.open_file(source)
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DataError(f"{label}: {path}: cannot read store shard ({exc}); re-run `thoraxmae data "
                        "prepare`") from None
    if rows != entry.get("rows"):
        raise DataError(f"{label}: {path}: holds {rows} images but {MANIFEST} says {entry.get('rows')}; "
                        "re-run `thoraxmae data prepare`")


def _check_split(need: SplitNeed, counts: dict | None, label: str) -> None:
    if need.split not in SPLITS:
        raise DataError(f"{need.field}: {need.split!r} is not a split of a store; expected one of "
                        f"{list(SPLITS)}")
    if counts is None or need.batch_size == 0:
        return
    n = counts.get(need.split, 0)
    shown = ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)
    if n == 0:
        raise DataError(f"{label}: split {need.split!r} ({need.field}) is empty (images per split: {shown}); "
                        f"prepare a store that has it, or set {need.field} to a split that has images")
    if need.batch_field and n // need.workers < need.batch_size:
        per = f"{n // need.workers} per worker ({need.workers} workers)" if need.workers > 1 else f"{n}"
        raise DataError(f"{label}: {need.batch_field}={need.batch_size} is more than split {need.split!r} "
                        f"holds ({per}); training drops incomplete batches, so it would see none: lower "
                        f"{need.batch_field} to at most {n // need.workers}")
