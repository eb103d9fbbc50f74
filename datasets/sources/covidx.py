"""COVIDx V9A: `train_COVIDx9A.txt` / `test_COVIDx9A.txt` with lines `patient_id filename label source`,
images in `train/` and `test/` (docs/data-formats.md "COVIDx"). Three classes, one-hot, task "multiclass"."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources.assemble import (
    Rows,
    build_table,
    check_missing_option,
    drop_missing,
    files_exist,
)
from thoraxmae.datasets.sources.csvio import check_unique, read_lines
from thoraxmae.datasets.sources.splits import carve_val
from thoraxmae.datasets.table import SourceTable

COVIDX_CLASSES = ("normal", "pneumonia", "COVID-19")
_CLASS_INDEX = {c.lower(): j for j, c in enumerate(COVIDX_CLASSES)}
SPLIT_DIRS = {"train": "train", "test": "test"}


def load_covidx(root: Path, *, version: str = "9A", split_seed: int = 0, val_fraction: float = 0.1,
                missing: str = "error") -> SourceTable:
    """The COVIDx table: classes COVIDX_CLASSES (one-hot), image_id `train/<file>` or `test/<file>`.

    version: the list-file suffix (`train_COVIDx{version}.txt`). val is carved from train by patient
    (`split_seed`, `val_fraction`). missing: "error" | "skip" for listed images absent on disk.
    """
    root = Path(root).resolve()
    check_missing_option(missing)
    parts = [_read_list(root / f"{split}_COVIDx{version}.txt", split) for split in SPLIT_DIRS]
    ids, patients, classes, lines = (np.concatenate([p[k] for p in parts]) for k in range(4))
    splits = np.concatenate([np.full(len(p[0]), split, dtype=object)
                             for split, p in zip(SPLIT_DIRS, parts, strict=True)])
    for split in SPLIT_DIRS:
        rows = splits == split
        check_unique(ids[rows], root / f"{split}_COVIDx{version}.txt", "filename", lines[rows])
    splits = carve_val(patients, splits, seed=split_seed, val_fraction=val_fraction,
                       where=str(root / f"train_COVIDx{version}.txt"))
    labels = np.eye(len(COVIDX_CLASSES), dtype=np.float32)[classes]
    paths = np.array([str(root / i) for i in ids.tolist()], dtype=object)
    rows = Rows(ids, paths, patients, splits, labels, np.ones(labels.shape, np.uint8), {"version": version})
    rows = drop_missing(rows, files_exist(paths), missing=missing, where=str(root))
    return build_table("covidx", COVIDX_CLASSES, rows, task="multiclass")


def _read_list(path: Path, split: str) -> tuple[np.ndarray, ...]:
    """image ids, patient ids, class indices and file lines of one list file.

    A line is `patient_id filename label source`; a filename with spaces is the middle fields joined.
    """
    ids, patients, classes, lines = [], [], [], []
    for line, text in read_lines(path):
        fields = text.split()
        if len(fields) < 4:
            raise DataError(f"{path}: line {line}: expected 'patient_id filename label source', got {text!r}")
        label = fields[-2]
        if label.lower() not in _CLASS_INDEX:
            raise DataError(f"{path}: line {line}: unknown label {label!r}; expected one of "
                            f"{list(COVIDX_CLASSES)}")
        ids.append(f"{SPLIT_DIRS[split]}/{' '.join(fields[1:-2])}")
        patients.append(fields[0])
        classes.append(_CLASS_INDEX[label.lower()])
        lines.append(line)
    if not ids:
        raise DataError(f"{path}: no entries ({split} split would be empty)")
    return (np.array(ids, dtype=object), np.array(patients, dtype=object), np.array(classes, dtype=np.int64),
            np.array(lines, dtype=np.int64))
