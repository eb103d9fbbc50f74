"""MIMIC-CXR-JPG: the three-file join, the view filter, the official split, image paths and bad input."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tests.unit.datasets.fixtures_sources import MIMIC_VIEWS, UNCERTAIN_VALUES, write_mimic
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import MIMIC_LABELS, load_source

RAW = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": np.nan}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mimic(tmp_path_factory.mktemp("mimic"))


def _k(dicom_id: str) -> int:
    return int(dicom_id[:8], 16)  # the fixture numbers images in the first 8 hex digits


def _raw(table) -> np.ndarray:
    """Raw chexpert cells for each table row: the study of image k starts at image k - k % 2."""
    return np.array([[RAW[UNCERTAIN_VALUES[(_k(d) - _k(d) % 2 + j) % 4]] for j in range(len(MIMIC_LABELS))]
                     for d in table.frame["image_id"]])


def _edit_gz(path: Path, old: str, new: str) -> None:
    with gzip.open(path, "rt") as fh:
        text = fh.read()
    assert old in text
    with gzip.open(path, "wt") as fh:
        fh.write(text.replace(old, new, 1))


def test_labels_are_the_alphabetical_fourteen():
    assert tuple(sorted(MIMIC_LABELS)) == MIMIC_LABELS and len(MIMIC_LABELS) == 14


def test_join_keeps_ap_pa_images_with_split_and_labels(root):
    table = load_source("mimic", root)
    kept = sorted(_k(d) for d in table.frame["image_id"])
    # 26: study without labels
    expected = [k for k in range(28) if MIMIC_VIEWS[k % 5] in ("AP", "PA") and k != 26]
    assert kept == expected
    assert table.notes["no_labels"] == 1 and table.notes["no_split"] == 0


def test_official_split_and_patient_ids(root):
    f = load_source("mimic", root).frame
    assert set(f.loc[f["split"] == "val", "patient_id"]) == {"12000001"}
    assert set(f.loc[f["split"] == "test", "patient_id"]) == {"13000002", "14000003"}
    assert set(f.loc[f["split"] == "train", "patient_id"]) == {"10000032", "10000764", "10000898", "11000011"}


def test_image_path_layout(root):
    table = load_source("mimic", root)
    first = table.frame.iloc[0]
    assert first["path"] == str(root.resolve() / "files/p10/p10000032/s50000000" / f"{first['image_id']}.jpg")


@pytest.mark.parametrize("policy", ["zeros", "ones", "ignore"])
def test_uncertainty_policies(root, policy):
    table = load_source("mimic", root, uncertainty=policy)
    raw = _raw(table)
    assert (raw == -1).any() and np.isnan(raw).any()
    uncertain_value = 1.0 if policy == "ones" else 0.0
    np.testing.assert_array_equal(table.labels,
                                  np.where(raw == -1, uncertain_value, raw == 1).astype(np.float32))
    np.testing.assert_array_equal(table.mask, (raw != -1) if policy == "ignore" else np.ones_like(raw))


def test_views_option(root):
    table = load_source("mimic", root, views=("AP", "PA", "LATERAL"))
    # LATERAL images k = 2, 7, 12, 17, 22 (27: no labels)
    assert len(table) == len(load_source("mimic", root)) + 5


def test_missing_column_names_the_file(tmp_path):
    root = write_mimic(tmp_path)
    _edit_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", "ViewPosition", "View")
    with pytest.raises(DataError, match=r"mimic-cxr-2\.0\.0-metadata\.csv\.gz: missing column "
                                        r"'ViewPosition'"):
        load_source("mimic", root)


def test_unknown_split_value(tmp_path):
    root = write_mimic(tmp_path)
    _edit_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ",validate", ",valid")
    with pytest.raises(DataError, match=r"split\.csv\.gz: line \d+: split 'valid' is not one of"):
        load_source("mimic", root)


def test_bad_label_value(tmp_path):
    root = write_mimic(tmp_path)
    _edit_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "10000032,50000000,1.0", "10000032,50000000,yes")
    with pytest.raises(DataError, match=r"chexpert\.csv\.gz: line 2, column 'Atelectasis': value 'yes'"):
        load_source("mimic", root)


def test_subject_in_train_and_test_is_leakage(tmp_path):
    root = write_mimic(tmp_path)
    _edit_gz(root / "mimic-cxr-2.0.0-split.csv.gz", "50000000,10000032,train", "50000000,10000032,test")
    with pytest.raises(DataError, match=r"patient leakage.*'10000032'"):
        load_source("mimic", root)


def test_missing_image(tmp_path):
    root = write_mimic(tmp_path)
    victim = Path(load_source("mimic", root).frame["path"].iloc[-1])
    victim.unlink()
    with pytest.raises(DataError, match=rf"1 of 11 listed image\(s\) not found.*{victim.name}"):
        load_source("mimic", root)
    assert len(load_source("mimic", root, missing="skip")) == 10
