"""MIMIC-CXR-JPG 2.0.0: the chexpert / metadata / split csv.gz files and `files/pXX/pSUBJECT/sSTUDY/*.jpg`
(docs/data-formats.md "MIMIC-CXR-JPG"). The official split is used as is (validate -> val)."""
from __future__ import annotations

import logging
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
from thoraxmae.datasets.sources.uncertainty import UncertaintyOption, apply_policy, resolve_policy
from thoraxmae.datasets.table import SourceTable

log = logging.getLogger(__name__)

# The 14 CheXpert-labeller observations, in the chexpert.csv.gz column order (alphabetical).
MIMIC_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
                "Fracture",
                "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                "Pneumothorax", "Support Devices")
LABELS_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}


def load_mimic(root: Path, *, uncertainty: UncertaintyOption = "zeros", views: Sequence[str] = ("AP", "PA"),
               missing: str = "error") -> SourceTable:
    """The MIMIC-CXR-JPG table, labels in MIMIC_LABELS order, patient = subject_id.

    uncertainty: "zeros" (default) | "ones" | "ignore", or a dict label -> policy (others "zeros").
    views: the ViewPosition values kept (default AP and PA). missing: "error" | "skip" (absent images).
    """
    root = Path(root).resolve()
    check_missing_option(missing)
    policy = resolve_policy(uncertainty, MIMIC_LABELS, {}, "zeros")
    meta_path = root / METADATA_FILE
    meta = read_csv_checked(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    dicom_ids = strings(meta["dicom_id"])
    check_unique(dicom_ids, meta_path, "dicom_id")
    subjects, studies = strings(meta["subject_id"]), strings(meta["study_id"])
    keep = np.isin(strings(meta["ViewPosition"]), list(views))
    split_of = _official_split(root / SPLIT_FILE)
    splits = np.array([split_of.get(d, "") for d in dicom_ids.tolist()], dtype=object)
    label_row, raw_all = _labels(root / LABELS_FILE)
    rows_idx = np.array([label_row.get((s, t), -1)
                         for s, t in zip(subjects.tolist(), studies.tolist(), strict=True)])
    notes = {"views": list(views), "uncertainty": policy,
             "no_split": int((keep & (splits == "")).sum()), "no_labels": int((keep & (rows_idx < 0)).sum())}
    for what, n in (("no split entry", notes["no_split"]), ("no labels for their study", notes["no_labels"])):
        if n:
            log.warning("%s: %d %s image(s) have %s; left out", root, n, "/".join(views), what)
    keep &= (splits != "") & (rows_idx >= 0)
    if not keep.any():
        raise DataError(f"{meta_path}: no image with ViewPosition in {list(views)} has a split and labels")
    labels, mask = apply_policy(raw_all[rows_idx[keep]], MIMIC_LABELS, policy)
    paths = np.array([str(_image_path(root, s, t, d)) for s, t, d in
                      zip(subjects[keep].tolist(), studies[keep].tolist(), dicom_ids[keep].tolist(),
                          strict=True)], dtype=object)
    rows = Rows(dicom_ids[keep], paths, subjects[keep], splits[keep], labels, mask, notes)
    rows = drop_missing(rows, files_exist(paths), missing=missing, where=str(meta_path))
    return build_table("mimic", MIMIC_LABELS, rows)


def _image_path(root: Path, subject: str, study: str, dicom_id: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg"


def _official_split(path: Path) -> dict[str, str]:
    """dicom_id -> "train" | "val" | "test" from the split file (validate -> val)."""
    df = read_csv_checked(path, ("dicom_id", "split"))
    ids = strings(df["dicom_id"])
    check_unique(ids, path, "dicom_id")
    out: dict[str, str] = {}
    for i, (dicom_id, split) in enumerate(zip(ids.tolist(), strings(df["split"]).tolist(), strict=True)):
        if split not in SPLIT_NAMES:
            raise DataError(f"{path}: line {csv_line(i)}: split {split!r} is not one of {list(SPLIT_NAMES)}")
        out[dicom_id] = SPLIT_NAMES[split]
    return out


def _labels(path: Path) -> tuple[dict[tuple[str, str], int], np.ndarray]:
    """(subject_id, study_id) -> row, and the raw label matrix [S, 14] (1 / 0 / -1 / NaN)."""
    df = read_csv_checked(path, ("subject_id", "study_id", *MIMIC_LABELS))
    keys = [(s, t) for s,
            t in zip(strings(df["subject_id"]).tolist(), strings(df["study_id"]).tolist(), strict=True)]
    check_unique(np.array([f"{s}/{t}" for s, t in keys], dtype=object), path, "subject_id/study_id")
    return {k: i for i, k in enumerate(keys)}, parse_label_values(df, MIMIC_LABELS, path)
