"""Dataset sources: each reads one public dataset layout (or a DICOM folder) into a validated SourceTable.

    table = load_source("nih", "/data/ChestX-ray14", split_seed=0, val_fraction=0.1)

Formats (SOURCES) and their options (keyword-only; an unknown option is a DataError listing the valid ones):
- nih: split_seed, val_fraction, split_files, missing, csv        (datasets/sources/nih.py)
- chexpert: labels, uncertainty, frontal, split_seed, val_fraction, missing
- mimic: uncertainty, views, missing
- covidx: version, split_seed, val_fraction, missing
- dicom: labels_csv, split_seed, val_fraction, test_fraction, missing

Label names. Each source keeps its dataset's own label names (NIH "Effusion", CheXpert/MIMIC
"Pleural Effusion"), so a table always says what its files say. For mixtures, `concat_tables` matches
labels by exact name; pass `harmonise=True` (or call `harmonise_labels`) to rename through LABEL_ALIASES
first, so that one finding becomes one column. The alias map is deliberately small: it lists only
findings that mean the same thing in both vocabularies (CheXpert's "Lung Lesion" is not NIH's "Mass" or
"Nodule"; "Pleural Other" is not "Pleural_Thickening").
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources.chexpert import CHEXPERT_LABELS, CHEXPERT_TASKS, MIXED_POLICY, load_chexpert
from thoraxmae.datasets.sources.covidx import COVIDX_CLASSES, load_covidx
from thoraxmae.datasets.sources.dicom import load_dicom, read_dicom
from thoraxmae.datasets.sources.mimic import MIMIC_LABELS, load_mimic
from thoraxmae.datasets.sources.nih import NIH_LABELS, load_nih
from thoraxmae.datasets.table import SourceTable

SOURCES: dict[str, Callable[..., SourceTable]] = {
    "nih": load_nih,
    "chexpert": load_chexpert,
    "mimic": load_mimic,
    "covidx": load_covidx,
    "dicom": load_dicom,
}

# CheXpert / MIMIC name -> NIH (canonical) name, for findings that are the same in both vocabularies.
LABEL_ALIASES: dict[str, str] = {"Pleural Effusion": "Effusion"}

__all__ = ["CHEXPERT_LABELS", "CHEXPERT_TASKS", "COVIDX_CLASSES", "LABEL_ALIASES", "MIMIC_LABELS",
           "MIXED_POLICY",
           "NIH_LABELS", "SOURCES", "harmonise_labels", "load_source", "read_dicom", "source_options"]


def source_options(fmt: str) -> tuple[str, ...]:
    """The keyword options the `fmt` source accepts."""
    _check_format(fmt)
    return tuple(p for p in inspect.signature(SOURCES[fmt]).parameters if p != "root")


def load_source(fmt: str, root: Path | str, *, harmonise: bool = False, **options: object) -> SourceTable:
    """Read the dataset at `root` in format `fmt` (one of SOURCES) into a validated SourceTable.

    harmonise: rename labels through LABEL_ALIASES (e.g. CheXpert "Pleural Effusion" -> "Effusion").
    """
    allowed = source_options(fmt)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"source {fmt!r}: unknown option(s) {unknown}; valid options: {list(allowed)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (source {fmt!r})")
    table = SOURCES[fmt](root, **options)
    return harmonise_labels(table) if harmonise else table


def harmonise_labels(table: SourceTable, aliases: Mapping[str, str] = LABEL_ALIASES) -> SourceTable:
    """The same table with its labels renamed through `aliases` (labels not in it keep their name)."""
    names = tuple(aliases.get(n, n) for n in table.label_names)
    if len(set(names)) != len(names):
        raise DataError(f"{table.name}: renaming labels {list(table.label_names)} through {dict(aliases)} "
                        f"gives duplicate names {names}")
    renamed = {a: b for a, b in zip(table.label_names, names, strict=True) if a != b}
    notes = {**table.notes, "renamed_labels": renamed}
    return SourceTable(table.name, names, table.frame, table.labels, table.mask, table.task, notes).validate()


def _check_format(fmt: str) -> None:
    if fmt not in SOURCES:
        raise DataError(f"unknown source format {fmt!r}; expected one of {list(SOURCES)}")
