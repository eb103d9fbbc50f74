"""The tidy table every source yields and every store is prepared from.

One row per image: `image_id` (unique), `path` (absolute file path), `patient_id`, `split`
(train | val | test), plus a label matrix `labels` [N, K] float32 (0/1; for multi-class sources
a one-hot row) and a `mask` [N, K] uint8 (1 = the label counts in the loss, 0 = ignore it, e.g.
CheXpert U-Ignore or a label a mixed-in source does not have). `reader` names how to decode a file
("image" for PNG/JPEG via PIL, "dicom" for DICOM).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from thoraxmae.datasets.errors import DataError

SPLITS = ("train", "val", "test")
FRAME_COLUMNS = ("image_id", "path", "patient_id", "split", "reader")
Task = Literal["multilabel", "multiclass"]


@dataclass
class SourceTable:
    name: str
    label_names: tuple[str, ...]
    frame: pd.DataFrame  # columns FRAME_COLUMNS, RangeIndex
    labels: np.ndarray  # [N, K] float32
    mask: np.ndarray  # [N, K] uint8
    task: Task = "multilabel"
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frame = self.frame.reset_index(drop=True)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.frame)

    def split_counts(self) -> dict[str, int]:
        return {s: int((self.frame["split"] == s).sum()) for s in SPLITS}

    def positives(self, split: str | None = None) -> dict[str, int]:
        rows = slice(None) if split is None else (self.frame["split"] == split).to_numpy()
        counted = self.labels[rows] * self.mask[rows]
        return {n: int(c) for n, c in zip(self.label_names, counted.sum(axis=0), strict=True)}

    def select(self, rows: np.ndarray) -> SourceTable:
        """A new table with only `rows` (bool mask or integer index)."""
        return SourceTable(self.name, self.label_names,
                           self.frame[rows].reset_index(drop=True) if rows.dtype == bool
                           else self.frame.iloc[rows].reset_index(drop=True),
                           self.labels[rows], self.mask[rows], self.task, dict(self.notes))

    def validate(self, required_splits: Sequence[str] = ()) -> SourceTable:
        """Check the invariants; raise DataError naming the culprit. Returns self."""
        validate_table(self, required_splits)
        return self


def validate_table(t: SourceTable, required_splits: Sequence[str] = ()) -> None:
    f = t.frame
    missing = [c for c in FRAME_COLUMNS if c not in f.columns]
    if missing:
        raise DataError(f"{t.name}: table lacks columns {missing}")
    n, k = len(f), len(t.label_names)
    if t.labels.shape != (n, k) or t.mask.shape != (n, k):
        raise DataError(f"{t.name}: labels {t.labels.shape} / mask {t.mask.shape} do not match {n} rows x "
                        f"{k} labels")
    bad_split = sorted(set(f["split"]) - set(SPLITS))
    if bad_split:
        raise DataError(f"{t.name}: unknown split names {bad_split}; expected {SPLITS}")
    dup = f["image_id"][f["image_id"].duplicated()]
    if len(dup):
        raise DataError(f"{t.name}: duplicate image ids, e.g. {dup.iloc[0]!r} ({len(dup)} duplicates)")
    for s in required_splits:
        if not (f["split"] == s).any():
            raise DataError(f"{t.name}: split {s!r} is empty")
    by_split = {s: set(f.loc[f["split"] == s, "patient_id"]) for s in SPLITS}
    for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
        leak = by_split[a] & by_split[b]
        if leak:
            raise DataError(f"{t.name}: patient leakage, {len(leak)} patients in both {a} and {b}, "
                            f"e.g. patient {min(leak)!r}")


def concat_tables(tables: Sequence[SourceTable], name: str = "mixture",
                  label_names: Sequence[str] | None = None) -> SourceTable:
    """A mixture of sources (e.g. CheXpert frontal + NIH train for pre-training).

    Labels are matched by name; a label a source lacks gets mask 0. Image and patient ids are
    prefixed with the part's name so two sources never collide; parts with the same table name (two
    NIH folders) are told apart as nih, nih-2, ... The notes list the parts (`parts`, in order) and keep
    each part's own notes (`part_notes`, by part name).
    """
    if not tables:
        raise DataError("concat_tables: no tables given")
    names = list(label_names) if label_names is not None else _union_names(tables)
    parts = _unique_names([t.name for t in tables])
    frames, labels, masks = [], [], []
    for t, part in zip(tables, parts, strict=True):
        fr = t.frame.copy()
        fr["image_id"] = part + "/" + fr["image_id"].astype(str)
        fr["patient_id"] = part + "/" + fr["patient_id"].astype(str)
        lab = np.zeros((len(t), len(names)), np.float32)
        msk = np.zeros((len(t), len(names)), np.uint8)
        for j, n in enumerate(names):
            if n in t.label_names:
                i = t.label_names.index(n)
                lab[:, j], msk[:, j] = t.labels[:, i], t.mask[:, i]
        frames.append(fr)
        labels.append(lab)
        masks.append(msk)
    tasks = {t.task for t in tables}
    if len(tasks) > 1:
        raise DataError(f"concat_tables: cannot mix tasks {sorted(tasks)}")
    return SourceTable(name, tuple(names), pd.concat(frames, ignore_index=True), np.concatenate(labels),
                       np.concatenate(masks), tasks.pop(),
                       {"parts": parts,
                        "part_notes": {p: dict(t.notes) for p, t in zip(parts, tables, strict=True)}})


def keep_splits(table: SourceTable, splits: Sequence[str]) -> SourceTable:
    """Only the rows of `splits` (e.g. ["train"] for a pre-training store); an emptied split is fine."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise DataError(f"keep_splits: unknown split name(s) {unknown or list(splits)}; expected some of "
                        f"{list(SPLITS)}")
    out = table.select(table.frame["split"].isin(list(splits)).to_numpy())
    out.notes["kept_splits"] = [s for s in SPLITS if s in splits]
    return out


def _unique_names(names: Sequence[str]) -> list[str]:
    """["nih", "nih", "chexpert"] -> ["nih", "nih-2", "chexpert"]."""
    out: list[str] = []
    for n in names:
        u, i = n, 1
        while u in out:
            i += 1
            u = f"{n}-{i}"
        out.append(u)
    return out


def _union_names(tables: Sequence[SourceTable]) -> list[str]:
    out: list[str] = []
    for t in tables:
        out += [n for n in t.label_names if n not in out]
    return out
