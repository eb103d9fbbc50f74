"""The last step of every source: drop or reject files missing on disk, build the SourceTable, validate."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.table import SPLITS, SourceTable, Task

log = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "skip")


def check_missing_option(missing: str) -> str:
    if missing not in MISSING_POLICIES:
        raise DataError(f"option missing={missing!r} is not one of {MISSING_POLICIES}")
    return missing


@dataclass
class Rows:
    """Parsed rows of one source, before the missing-file check; object arrays of str, one entry per image."""

    image_ids: np.ndarray
    paths: np.ndarray  # absolute
    patient_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray  # [N, K] float32
    mask: np.ndarray  # [N, K] uint8
    notes: dict = field(default_factory=dict)

    def take(self, keep: np.ndarray) -> Rows:
        return Rows(self.image_ids[keep], self.paths[keep], self.patient_ids[keep], self.splits[keep],
                    self.labels[keep], self.mask[keep], self.notes)


def files_exist(paths: np.ndarray) -> np.ndarray:
    return np.fromiter((os.path.isfile(p) for p in paths.tolist()), dtype=bool, count=len(paths))


def drop_missing(rows: Rows, exists: np.ndarray, *, missing: str, where: str) -> Rows:
    """Rows whose file exists; with missing="error" a missing file is a DataError naming it and the count."""
    absent = ~exists
    n = int(absent.sum())
    if n == 0:
        return rows
    first = rows.paths[absent][0]
    if missing == "error":
        raise DataError(f"{where}: {n} of {len(rows.paths)} listed image(s) not found on disk, e.g. {first}; "
                        "pass missing='skip' (CLI: --missing skip) to drop them")
    log.warning("%s: skipping %d of %d listed image(s) not found on disk, e.g. "
                "%s", where, n, len(rows.paths), first)
    rows.notes["skipped_missing"] = n
    return rows.take(exists)


def build_table(name: str, label_names: Sequence[str], rows: Rows, *, reader: str = "image",
                task: Task = "multilabel", required_splits: Sequence[str] = SPLITS) -> SourceTable:
    frame = pd.DataFrame({
        "image_id": rows.image_ids.astype(str),
        "path": rows.paths.astype(str),
        "patient_id": rows.patient_ids.astype(str),
        "split": rows.splits.astype(str),
        "reader": np.full(len(rows.image_ids), reader, dtype=object).astype(str),
    })
    table = SourceTable(name, tuple(label_names), frame, rows.labels, rows.mask, task, dict(rows.notes))
    table.validate(required_splits)
    log.info("%s: %d images, splits %s", name, len(table), table.split_counts())
    return table
