"""CheXpert v1.0 / v1.0-small: `train.csv` + `valid.csv` (docs/data-formats.md "CheXpert").

valid.csv is the test split (the paper tests on it); train.csv is split into train / val by patient
(`val_fraction` of its patients; 0 keeps every train.csv image in train, as the paper's pre-training
mixture "X-rays 0.3M" does).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
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
from thoraxmae.datasets.sources.csvio import (
    check_unique,
    csv_line,
    parse_label_values,
    read_csv_checked,
    strings,
)
from thoraxmae.datasets.sources.splits import carve_val
from thoraxmae.datasets.sources.uncertainty import UncertaintyOption, apply_policy, resolve_policy
from thoraxmae.datasets.table import SPLITS, SourceTable

# The 14 observations in the csv's column order.
CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices")
# The 5 competition tasks (the paper's CheXpert evaluation), in the reference's class order: a released
# CheXpert head's outputs are these, in this order (docs/paper.md).
CHEXPERT_TASKS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
# The paper's mixed policy: U-Ones for Atelectasis and Edema; every other label U-Zeros.
MIXED_POLICY = {"Atelectasis": "ones", "Edema": "ones"}
LABEL_SETS = {"5task": CHEXPERT_TASKS, "14label": CHEXPERT_LABELS}
CSV_FILES = {"train": "train.csv", "test": "valid.csv"}
_PREFIX = re.compile(r"^CheXpert-v1\.0(-small)?/")
_PATIENT = re.compile(r"(?:^|/)(patient\d+)/")


def load_chexpert(root: Path, *, labels: str | Sequence[str] = "5task", uncertainty: UncertaintyOption = None,
                  frontal: bool = True, split_seed: int = 0, val_fraction: float = 0.1,
                  missing: str = "error") -> SourceTable:
    """The CheXpert table.

    labels: "5task" (CHEXPERT_TASKS, default), "14label" (CHEXPERT_LABELS) or a list of observation names.
    uncertainty: "ignore" | "zeros" | "ones" for all labels, or a dict label -> policy; labels not named
    take MIXED_POLICY (U-Ones Atelectasis/Edema, U-Zeros others). Blanks are negatives.
    frontal: keep only `Frontal/Lateral == Frontal` rows (default on).
    val_fraction: fraction of train.csv patients moved to val, in [0, 1); 0 gives no val split.
    missing: "error" (default) or "skip" for listed images absent on disk.
    """
    root = Path(root).resolve()
    check_missing_option(missing)
    names = _label_names(labels)
    policy = resolve_policy(uncertainty, names, MIXED_POLICY, "zeros")
    parts = [_read_part(root / file_name, split, names, frontal) for split, file_name in CSV_FILES.items()]
    ids, patients, raw = (np.concatenate([p[k] for p in parts]) for k in range(3))
    splits = np.concatenate([np.full(len(p[0]), split, dtype=object)
                             for split, p in zip(CSV_FILES, parts, strict=True)])
    splits = carve_val(patients, splits, seed=split_seed, val_fraction=val_fraction,
                       where=str(root / "train.csv"),
                       allow_zero=True)
    lab, mask = apply_policy(raw, names, policy)
    paths = np.array([str(root / i) for i in ids.tolist()], dtype=object)
    rows = Rows(ids, paths, patients, splits, lab, mask,
                {"uncertainty": policy, "frontal": frontal, "val_fraction": float(val_fraction)})
    rows = drop_missing(rows, files_exist(paths), missing=missing, where=str(root))
    return build_table("chexpert", names, rows,
                       required_splits=("train", "test") if val_fraction == 0 else SPLITS)


def _label_names(labels: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        if labels not in LABEL_SETS:
            raise DataError(f"option labels={labels!r} is not one of {list(LABEL_SETS)} or a list of names")
        return LABEL_SETS[labels]
    unknown = [n for n in labels if n not in CHEXPERT_LABELS]
    if unknown or not labels:
        raise DataError(f"option labels names unknown observation(s) {unknown}; choose from "
                        f"{list(CHEXPERT_LABELS)}")
    return tuple(labels)


def _read_part(path: Path, split: str, names: Sequence[str],
               frontal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One csv -> image ids, patient ids, raw labels [N, K] (1 / 0 / -1 / NaN); frontal rows only if asked."""
    df = read_csv_checked(path, ("Path", "Frontal/Lateral", *names))
    ids = np.array([_PREFIX.sub("", p) for p in strings(df["Path"]).tolist()], dtype=object)
    check_unique(ids, path, "Path")
    patients = np.empty(len(ids), dtype=object)
    for i, image_id in enumerate(ids.tolist()):
        m = _PATIENT.search(image_id)
        if m is None:
            raise DataError(f"{path}: line {csv_line(i)}: Path {image_id!r} has no patientNNNNN folder")
        patients[i] = m.group(1)
    raw = parse_label_values(df, names, path)
    keep = strings(df["Frontal/Lateral"]) == "Frontal" if frontal else np.ones(len(ids), bool)
    if not keep.any():
        raise DataError(f"{path}: no {'frontal ' if frontal else ''}images ({split} split would be empty)")
    return ids[keep], patients[keep], raw[keep]
