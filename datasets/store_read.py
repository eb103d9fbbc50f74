"""Reading a prepared store: `open_store(path) -> Store`, memory-mapped and shareable by many processes;
`check_store(path)`, the cheap check a caller runs before starting anything expensive (Ray, a study).
Opening a local store checks its shards' contents against the manifest's hashes once per node
(datasets.store_verify).
Both accept an object-store URI (`s3://...`, `gs://...`): `open_store` reads the node-local copy
datasets.remote fetches once; `check_store` reads only the remote manifest and lists the shard objects."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from thoraxmae.datasets import remote, store_verify
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.store_shards import FORMAT_VERSION, fixed_list, open_shard
from thoraxmae.datasets.table import SPLITS

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("format_version", "size", "label_names", "task", "shards")


class Store:
    """A prepared store. Pixels stay in the memory-mapped shard files; labels, masks and ids are small
    in-memory arrays. Pickling keeps only the path (a worker process re-opens the files)."""

    def __init__(self, path: Path | str):
        self.source = str(path) if remote.is_uri(path) else None  # the URI a cached copy was fetched from
        self.path = remote.local_store(path)
        self.manifest = check_store(self.path)
        m = self.manifest
        if self.source is None:  # a fetched copy was verified shard by shard as it came (datasets.remote)
            store_verify.verify_once(self.path, m)  # bit-level, once per node and manifest
        self.size: int = int(m["size"])  # the stored images' shorter side is at most this
        self.label_names: tuple[str, ...] = tuple(m["label_names"])
        self.task: str = m["task"]
        k = len(self.label_names)
        self._shards, labels, mask, image_ids, patient_ids, splits = [], [], [], [], [], []
        for entry in m["shards"]:
            view = open_shard(self.path / entry["file"])
            if len(view) != entry["rows"]:
                raise DataError(f"{self.path / entry['file']}: holds {len(view)} images but {MANIFEST} "
                                f"says {entry['rows']}; re-run `thoraxmae data prepare`")
            self._shards.append(view)
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
        return (f"Store({str(self.path)!r}, {len(self)} images, shorter side <= {self.size} px, "
                f"{len(self.label_names)} labels)")

    def __getstate__(self) -> dict:
        return {"path": self.source or str(self.path)}  # a URI: each node re-opens its own cached copy

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def image(self, i: int) -> np.ndarray:
        """uint8 [h, w], a read-only view of the memory-mapped shard (no copy)."""
        view, j = self._locate(i)
        return view.image(j)

    def levels(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(the image, its half-resolution copy or None when the store holds the original), zero-copy
        views."""
        view, j = self._locate(i)
        return view.image(j), view.half(j)

    def _locate(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for a store of {len(self)} images")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._shards[shard], i - int(self._starts[shard])

    def shapes(self) -> np.ndarray:
        """[N, 2] int (height, width) of every stored image."""
        if not self._shards:
            return np.zeros((0, 2), np.int64)
        return np.stack([np.concatenate([s.heights for s in self._shards]),
                         np.concatenate([s.widths for s in self._shards])], axis=1).astype(np.int64)

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices (int64, ascending) of one split."""
        if split not in SPLITS:
            raise DataError(f"{self.path}: unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.splits == split).astype(np.int64)


def check_store(path: Path | str) -> dict:
    """The store's manifest, after the checks that need no pixel read: the manifest exists and parses,
    its format version is the one this thoraxmae reads, and every shard file it lists is present.
    Raises a one-line DataError naming the store (and, for a version mismatch, both versions).
    For a URI: the remote manifest, and the shard objects it lists (nothing is downloaded)."""
    if remote.is_uri(path):
        uri = str(path).rstrip("/")
        manifest = _checked(remote.read_manifest_uri(uri), uri, f"{uri}/{MANIFEST}")
        missing = remote.missing_shards(uri, manifest)
        if missing:
            raise DataError(f"{uri}/{missing[0]}: store shard missing (listed in {MANIFEST}); re-run "
                            f"`thoraxmae data prepare --out {uri}`")
        return manifest
    path = Path(path)
    file = path / MANIFEST
    if not file.is_file():
        what = "folder not found" if not path.exists() else f"no {MANIFEST}"
        raise DataError(f"{path}: not a prepared store ({what}); prepare one with `thoraxmae data prepare`")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: unreadable store manifest ({e})") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{file}: unreadable store manifest (not a JSON object)")
    _checked(manifest, path, file)
    for entry in manifest["shards"]:
        shard = path / entry["file"]
        if not shard.is_file():
            raise DataError(f"{shard}: store shard missing (listed in {MANIFEST}); re-run `thoraxmae data "
                            "prepare`")
    return manifest


def _checked(manifest: dict, path: Path | str, file: Path | str) -> dict:
    """The format version is the one this thoraxmae reads and the manifest has the keys readers need."""
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: store format version {version!r}, this thoraxmae reads version "
                        f"{FORMAT_VERSION}; re-run `thoraxmae data prepare` into a new folder")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{file}: manifest lacks {missing}")
    return manifest


def read_manifest(path: Path | str) -> dict:
    """The manifest of a store (checked as `check_store` does)."""
    return check_store(path)


def open_store(path: Path | str) -> Store:
    """Open a prepared store (DataError naming the file when it is missing, stale or damaged)."""
    return Store(path)
