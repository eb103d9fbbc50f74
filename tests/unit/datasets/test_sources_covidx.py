"""COVIDx V9A: list-file parsing, one-hot classes, the patient-level val split and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from tests.unit.datasets.fixtures_sources import PNG, write_covidx
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import COVIDX_CLASSES, load_source


def _append(path, line: str) -> None:
    with path.open("a") as fh:
        fh.write(line + "\n")


def test_classes_are_one_hot_multiclass(tmp_path):
    table = load_source("covidx", write_covidx(tmp_path))
    assert table.task == "multiclass" and table.label_names == COVIDX_CLASSES == ("normal", "pneumonia",
                                                                                  "COVID-19")
    assert len(table) == 30
    assert table.positives() == {"normal": 10, "pneumonia": 10, "COVID-19": 10}
    row = table.frame.index[table.frame["image_id"] == "train/COVID-0002.png"][0]
    np.testing.assert_array_equal(table.labels[row], [0, 0, 1])


def test_splits_and_alphanumeric_patients(tmp_path):
    table = load_source("covidx", write_covidx(tmp_path), val_fraction=0.25)
    f = table.frame
    assert f.loc[f["split"] == "test", "image_id"].str.startswith("test/").all()
    assert set(f.loc[f["split"] == "test", "patient_id"]) == {"T0x", "T1x", "T2x"}
    assert f.loc[f["split"] != "test", "image_id"].str.startswith("train/").all()
    assert "A000-covid" in set(f["patient_id"])
    train_patients = f.loc[f["split"] != "test", "patient_id"].nunique()
    assert f.loc[f["split"] == "val", "patient_id"].nunique() == round(0.25 * train_patients)


def test_filename_with_spaces_and_case_of_label(tmp_path):
    root = write_covidx(tmp_path)
    (root / "train" / "chest film 7.png").write_bytes(PNG)
    _append(root / "train_COVIDx9A.txt", "P99 chest film 7.png Normal bimcv")
    table = load_source("covidx", root)
    row = table.frame.index[table.frame["image_id"] == "train/chest film 7.png"][0]
    np.testing.assert_array_equal(table.labels[row], [1, 0, 0])


def test_unknown_label_names_file_line_and_string(tmp_path):
    root = write_covidx(tmp_path)
    _append(root / "test_COVIDx9A.txt", "T9x test-999.jpg viral rsna")
    with pytest.raises(DataError, match=r"test_COVIDx9A\.txt: line 7: unknown label 'viral'"):
        load_source("covidx", root)


def test_short_line(tmp_path):
    root = write_covidx(tmp_path)
    _append(root / "train_COVIDx9A.txt", "P1 only-two-fields.png")
    with pytest.raises(DataError, match=r"train_COVIDx9A\.txt: line 25: expected 'patient_id filename label "
                                        r"source'"):
        load_source("covidx", root)


def test_duplicate_filename(tmp_path):
    root = write_covidx(tmp_path)
    _append(root / "train_COVIDx9A.txt", "7 img-0001.png normal rsna")
    with pytest.raises(DataError, match=r"train_COVIDx9A\.txt: line 25: duplicate filename "
                                        r"'train/img-0001\.png'"):
        load_source("covidx", root)


def test_patient_in_train_and_test_is_leakage(tmp_path):
    root = write_covidx(tmp_path)
    (root / "test" / "extra.png").write_bytes(PNG)
    _append(root / "test_COVIDx9A.txt", "A000-covid extra.png normal rsna")
    with pytest.raises(DataError, match=r"patient leakage.*'A000-covid'"):
        load_source("covidx", root)


def test_empty_test_list(tmp_path):
    root = write_covidx(tmp_path)
    (root / "test_COVIDx9A.txt").write_text("\n")
    with pytest.raises(DataError, match=r"test_COVIDx9A\.txt: no entries"):
        load_source("covidx", root)


def test_version_option_and_missing_list(tmp_path):
    root = write_covidx(tmp_path, version="9B")
    assert len(load_source("covidx", root, version="9B")) == 30
    with pytest.raises(DataError, match=r"train_COVIDx9A\.txt: file not found"):
        load_source("covidx", root)


def test_missing_image(tmp_path):
    root = write_covidx(tmp_path)
    (root / "test" / "test-003.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 30 listed image\(s\) not found.*test-003\.jpg"):
        load_source("covidx", root)
    assert len(load_source("covidx", root, missing="skip")) == 29
