"""DICOM radiographs: `read_dicom` (any DICOM -> display-ready uint8) and the "dicom" source
(a folder of DICOM files + a labels CSV), docs/data-formats.md "DICOM".

Labels CSV columns: `file` (path relative to the folder), optional `patient_id`, optional `split`
(train / val / test; `validate` is read as val), then one column per label with 0, 1 or blank
(blank = unknown: label 0, mask 0). Without `split`, a patient-level train/val/test split is drawn
from `split_seed`; with `split` but no val rows, val is carved from train by patient. Without
`patient_id`, every image is its own patient.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi

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
from thoraxmae.datasets.sources.splits import carve_val, random_split
from thoraxmae.datasets.table import SourceTable

log = logging.getLogger(__name__)

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val",
                 "test": "test"}
META_COLUMNS = ("file", "patient_id", "split")

DEFAULT_LABELS_CSV = "labels.csv"  # in the DICOM folder, unless --labels-csv names another file


def read_dicom(path: Path | str) -> np.ndarray:
    """One grayscale DICOM image -> uint8 [H, W], bright = dense (bone), as a radiologist sees it.

    BitsStored > 8: the first VOI LUT, else the first window centre/width, else min-max maps to 0..255.
    MONOCHROME1 (low value = bright) is inverted. RGB, multi-frame or other photometric
    interpretations are a DataError naming the file.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: cannot read as DICOM ({e})") from e
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GRAYSCALE:
        raise DataError(f"{path}: PhotometricInterpretation {photometric!r} is not supported; expected one "
                        f"of {GRAYSCALE} (a grayscale radiograph)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"{path}: {frames} frame(s) x {ds.get('SamplesPerPixel', 1)} sample(s) per pixel; "
                        "expected a single-frame single-sample image")
    try:
        pixels = ds.pixel_array  # [H, W]
    except (AttributeError, KeyError, ValueError, NotImplementedError, RuntimeError) as e:
        raise DataError(f"{path}: cannot decode the pixel data ({e})") from e
    if pixels.ndim != 2:
        raise DataError(f"{path}: pixel data has shape {pixels.shape}; expected [rows, columns]")
    out = to_uint8(pixels, ds)
    return 255 - out if photometric == "MONOCHROME1" else out


def to_uint8(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Stored values [H, W] -> uint8 [H, W] in the stored polarity (no MONOCHROME1 inversion here)."""
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)  # rescale slope / intercept
    bits = int(ds.get("BitsStored", 8 * pixels.itemsize))
    if bits <= 8:
        unit = np.clip(values, 0, 255) / 255.0
    elif ds.get("VOILUTSequence"):
        unit = _voi_lut(values, ds)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        unit = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth),
                       str(ds.get("VOILUTFunction", "LINEAR")).upper())
    else:
        low, high = float(values.min()), float(values.max())
        unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.rint(unit * 255.0).astype(np.uint8)


def _first(value: object) -> float:
    """The first of a multi-valued DICOM element (a file may carry several windows)."""
    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def _window(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 window -> [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    return np.clip((values - (centre - 0.5)) / max(width - 1.0, 1.0) + 0.5, 0.0, 1.0)


def _voi_lut(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """The first VOI LUT, its output range stretched to [0, 1]."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor  # [entries (0 = 65536), first mapped value, bits]
    entries, first_mapped = int(descriptor[0]) or 65536, int(descriptor[1])
    table_out = np.asarray(apply_voi(np.arange(first_mapped, first_mapped + entries), ds), dtype=np.float64)
    low, high = float(table_out.min()), float(table_out.max())
    mapped = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds), dtype=np.float64)
    return (mapped - low) / (high - low) if high > low else np.zeros_like(mapped)


def load_dicom(root: Path, *, labels_csv: Path | str | None = None, split_seed: int = 0,
               val_fraction: float = 0.1,
               test_fraction: float = 0.2, missing: str = "error") -> SourceTable:
    """A DICOM folder with a labels CSV (module docstring); reader "dicom", labels = the CSV's label columns.
    labels_csv: a path like any other (a relative one from the working directory); default
    `root`/labels.csv."""
    root = Path(root).resolve()
    check_missing_option(missing)
    csv_path = root / DEFAULT_LABELS_CSV if labels_csv is None else Path(labels_csv).expanduser().absolute()
    df = read_csv_checked(csv_path, ("file",))
    names = [c for c in df.columns if c not in META_COLUMNS]
    for c in names:
        if c.startswith("Unnamed: "):
            raise DataError(f"{csv_path}: column {list(df.columns).index(c) + 1} has an empty header")
    if not names:
        raise DataError(f"{csv_path}: no label columns besides {list(META_COLUMNS)}")
    files = strings(df["file"])
    check_unique(files, csv_path, "file")
    patients = _column_or_ids(df, "patient_id", files, csv_path)
    raw = parse_label_values(df, names, csv_path, allowed=(1.0, 0.0))
    where = str(csv_path)
    if "split" in df.columns:
        splits = _given_splits(strings(df["split"]), csv_path)
        if not (splits == "val").any():
            splits = carve_val(patients, splits, seed=split_seed, val_fraction=val_fraction, where=where)
    else:
        splits = random_split(patients, seed=split_seed, val_fraction=val_fraction,
                              test_fraction=test_fraction,
                              where=where)
    paths = np.array([str(root / f) for f in files.tolist()], dtype=object)
    rows = Rows(files, paths, patients, splits, np.nan_to_num(raw, nan=0.0),
                (~np.isnan(raw)).astype(np.uint8),
                {"labels_csv": csv_path.name})
    rows = drop_missing(rows, files_exist(paths), missing=missing, where=where)
    return build_table("dicom", names, rows, reader="dicom")


def _column_or_ids(df: pd.DataFrame, column: str, files: np.ndarray, csv_path: Path) -> np.ndarray:
    if column not in df.columns:
        log.warning("%s: no %s column; every image counts as its own patient", csv_path, column)
        return files.copy()
    values = strings(df[column])
    empty = np.flatnonzero(values == "")
    if len(empty):
        raise DataError(f"{csv_path}: line {csv_line(int(empty[0]))}: empty {column}")
    return values


def _given_splits(values: np.ndarray, csv_path: Path) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values.tolist()):
        if v.lower() not in SPLIT_ALIASES:
            raise DataError(f"{csv_path}: line {csv_line(i)}: split {v!r} is not one of train, val, test")
        out[i] = SPLIT_ALIASES[v.lower()]
    return out
