"""Reading a prepared store: `open_store(path) -> Store`, memory-mapped and shareable by many processes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.store_shards import FORMAT_VERSION, fixed_list, open_shard
from thoraxmae.datasets.table import SPLITS

MANIFEST = "manifest.json"


class Store:
    """A prepared store. Pixels stay in the memory-mapped shard files; labels, masks and ids are small
    in-memory arrays. Pickling keeps only the path (a worker process re-opens the files)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        m = self.manifest
        self.size: int = int(m["size"])
        self.label_names: tuple[str, ...] = tuple(m["label_names"])
        self.task: str = m["task"]
        k = len(self.label_names)
        self._shards, labels, mask, image_ids, patient_ids, splits = [], [], [], [], [], []
        for entry in m["shards"]:
            view = open_shard(self.path / entry["file"], self.size)
            if len(view.images) != entry["rows"]:
                raise DataError(f"{self.path / entry['file']}: holds {len(view.images)} images but {MANIFEST} "
                                f"says {entry['rows']}; re-run `thoraxmae data prepare`")
            self._shards.append(view.images)
            labels.append(fixed_list(view.table.column("labels"), np.float32, k))
            mask.append(fixed_list(view.table.column("mask"), np.uint8, k))
            for out, col in ((image_ids, "image_id"), (patient_ids, "patient_id"), (splits, "split")):
                out += view.table.column(col).to_pylist()
        self._starts = np.cumsum([0] + [len(s) for s in self._shards])
        self.labels: np.ndarray = np.concatenate(labels) if labels else np.zeros((0, k), np.float32)  # [N, K]
        self.mask: np.ndarray = np.concatenate(mask) if mask else np.zeros((0, k), np.uint8)  # [N, K]
        self.image_ids = np.asarray(image_ids, dtype=object)
        self.patient_ids = np.asarray(patient_ids, dtype=object)
        self.splits = np.asarray(splits, dtype=object)
        for a in (self.labels, self.mask):
            a.flags.writeable = False

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, {len(self)} images of {self.size} px, {len(self.label_names)} labels)"

    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def image(self, i: int) -> np.ndarray:
        """uint8 [size, size], a read-only view of the memory-mapped shard (no copy)."""
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for a store of {len(self)} images")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._shards[shard][i - self._starts[shard]]

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices (int64, ascending) of one split."""
        if split not in SPLITS:
            raise DataError(f"{self.path}: unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.splits == split).astype(np.int64)


def read_manifest(path: Path) -> dict:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise DataError(f"{file}: store manifest not found; prepare the store with `thoraxmae data prepare`")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: unreadable store manifest ({e})") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{file}: store format version {version!r}, this thoraxmae reads version {FORMAT_VERSION}; "
                        "re-run `thoraxmae data prepare`")
    missing = [k for k in ("size", "label_names", "task", "shards") if k not in manifest]
    if missing:
        raise DataError(f"{file}: manifest lacks {missing}")
    return manifest


def open_store(path: Path | str) -> Store:
    """Open a prepared store (DataError naming the file when it is missing, stale or damaged)."""
    return Store(path)
