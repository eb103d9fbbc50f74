"""ChestX-ray14 (NIH): `Data_Entry_2017[_v2020].csv`, PNGs in `images/` or `images_0XX/images/`,
the official `train_val_list.txt` / `test_list.txt`, optionally the paper's split files
(docs/data-formats.md)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources.assemble import Rows, build_table, check_missing_option, drop_missing
from thoraxmae.datasets.sources.csvio import check_unique, csv_line, read_csv_checked, read_lines, strings
from thoraxmae.datasets.sources.splits import carve_val
from thoraxmae.datasets.table import SourceTable

log = logging.getLogger(__name__)

# docs/data-formats.md: the canonical order (index 0..13) of the paper and its split files.
NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
              "Hernia")
NO_FINDING = "No Finding"
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # first found wins
OFFICIAL_LISTS = {"trainval": "train_val_list.txt", "test": "test_list.txt"}
PAPER_SPLIT_FILES = {"train": "train_official.txt", "val": "val_official.txt", "test": "test_official.txt"}
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")


def load_nih(root: Path, *, split_seed: int = 0, val_fraction: float = 0.1,
             split_files: Path | str | None = None,
             missing: str = "error", csv: Path | str | None = None) -> SourceTable:
    """The ChestX-ray14 table, labels in NIH_LABELS order.

    split_files: a folder with train_official.txt / val_official.txt / test_official.txt (the paper's
    split); otherwise val is carved from train_val_list.txt by patient (`split_seed`, `val_fraction`).
    missing: "error" (default) or "skip" for images listed in the csv but absent on disk.
    csv: the Data_Entry file (default: the first of CSV_NAMES found in `root`).
    """
    root = Path(root).resolve()
    check_missing_option(missing)
    csv_path = _find_csv(root, csv)
    entries = read_csv_checked(csv_path, REQUIRED_COLUMNS)
    names = strings(entries["Image Index"])
    check_unique(names, csv_path, "Image Index")
    labels = parse_findings(strings(entries["Finding Labels"]), csv_path)
    patients = _patient_ids(strings(entries["Patient ID"]), csv_path)
    if split_files is None:
        splits = _official_splits(root, names, patients, seed=split_seed, val_fraction=val_fraction)
    else:
        splits = _paper_splits(Path(split_files), names, labels, csv_path)
    index = index_pngs(root)
    paths = np.array([index.get(n, str(root / "images" / n)) for n in names.tolist()], dtype=object)
    rows = Rows(names, paths, patients, splits, labels, np.ones(labels.shape, np.uint8),
                {"csv": csv_path.name, "split_files": str(split_files) if split_files else None})
    listed = splits != ""
    if not listed.all():
        log.warning("%s: %d image(s) are in no split list; left out", csv_path, int((~listed).sum()))
        rows.notes["unlisted"] = int((~listed).sum())
        rows = rows.take(listed)
    exists = np.array([n in index for n in rows.image_ids.tolist()], dtype=bool)
    rows = drop_missing(rows, exists, missing=missing, where=str(csv_path))
    return build_table("nih", NIH_LABELS, rows)


def _find_csv(root: Path, csv: Path | str | None) -> Path:
    if csv is not None:
        path = Path(csv) if Path(csv).is_absolute() else root / csv
        if not path.is_file():
            raise DataError(f"{path}: file not found (option csv)")
        return path
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no {' or '.join(CSV_NAMES)} found")


def parse_findings(findings: np.ndarray, csv_path: Path) -> np.ndarray:
    """`Finding Labels` strings ("A|B", "No Finding") -> multi-hot [N, 14] float32 in NIH_LABELS order."""
    column = {n: j for j, n in enumerate(NIH_LABELS)}
    cache: dict[str, np.ndarray] = {}
    out = np.zeros((len(findings), len(NIH_LABELS)), np.float32)
    for i, text in enumerate(findings.tolist()):
        if text not in cache:
            row = np.zeros(len(NIH_LABELS), np.float32)
            if text != NO_FINDING:
                for part in text.split("|"):
                    j = column.get(part.strip())
                    if j is None:
                        raise DataError(f"{csv_path}: line {csv_line(i)}: unknown finding {part.strip()!r} "
                                        f"in 'Finding Labels' {text!r}; expected {NO_FINDING!r} or "
                                        f"'|'-joined names from {list(NIH_LABELS)}")
                    row[j] = 1.0
            cache[text] = row
        out[i] = cache[text]
    return out


def _patient_ids(raw: np.ndarray, csv_path: Path) -> np.ndarray:
    """`Patient ID` as text; numeric ids lose leading zeros so "00001" and "1" are one patient."""
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw.tolist()):
        if not v:
            raise DataError(f"{csv_path}: line {csv_line(i)}: empty 'Patient ID'")
        out[i] = str(int(v)) if v.isdigit() else v
    return out


def index_pngs(root: Path) -> dict[str, str]:
    """PNG file name -> absolute path, over `images/` and `images_0XX/images/` (both layouts accepted)."""
    folders = [root / "images"] + sorted(p / "images" for p in root.glob("images_*") if p.is_dir())
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise DataError(f"{root}: no images/ folder and no images_0XX/images/ folders")
    index: dict[str, str] = {}
    for folder in folders:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(".png") and entry.is_file():
                    if entry.name in index:
                        raise DataError(f"{root}: image {entry.name} is in two folders: {index[entry.name]} "
                                        f"and {entry.path}")
                    index[entry.name] = entry.path
    return index


def _official_splits(root: Path, names: np.ndarray, patients: np.ndarray, *, seed: int,
                     val_fraction: float) -> np.ndarray:
    """train_val_list.txt / test_list.txt -> "train" | "val" | "test" | "" (in neither list)."""
    position = {n: i for i, n in enumerate(names.tolist())}
    splits = np.full(len(names), "", dtype=object)
    for part, file_name in OFFICIAL_LISTS.items():
        path = root / file_name
        for line, name in read_lines(path):
            i = _row_of(name, position, path, line)
            if splits[i]:
                raise DataError(f"{path}: line {line}: {name} is listed twice (train_val_list.txt and "
                                "test_list.txt must be disjoint)")
            splits[i] = "train" if part == "trainval" else "test"
    return carve_val(patients, splits, seed=seed, val_fraction=val_fraction,
                     where=str(root / OFFICIAL_LISTS["trainval"]))


def _row_of(name: str, position: dict[str, int], path: Path, line: int) -> int:
    if name not in position:
        raise DataError(f"{path}: line {line}: image {name!r} is not in the Data_Entry csv")
    return position[name]


def _paper_splits(folder: Path, names: np.ndarray, labels: np.ndarray, csv_path: Path) -> np.ndarray:
    """The paper's split files: `name` + 14 ints (NIH_LABELS order) per line, checked against the csv."""
    position = {n: i for i, n in enumerate(names.tolist())}
    splits = np.full(len(names), "", dtype=object)
    for split, file_name in PAPER_SPLIT_FILES.items():
        path = folder / file_name
        for line, text in read_lines(path):
            fields = text.split()
            if len(fields) != 1 + len(NIH_LABELS) or any(f not in ("0", "1") for f in fields[1:]):
                raise DataError(f"{path}: line {line}: expected an image name and {len(NIH_LABELS)} labels "
                                f"0/1, got {text!r}")
            i = _row_of(fields[0], position, path, line)
            given = np.array(fields[1:], dtype=np.float32)
            if not np.array_equal(given, labels[i]):
                differ = [n for n, a, b in zip(NIH_LABELS, given, labels[i], strict=True) if a != b]
                raise DataError(f"{path}: line {line}: labels of {fields[0]} disagree with {csv_path.name} "
                                f"on {differ}")
            if splits[i]:
                raise DataError(f"{path}: line {line}: {fields[0]} is already in the {splits[i]} split file")
            splits[i] = split
    return splits
