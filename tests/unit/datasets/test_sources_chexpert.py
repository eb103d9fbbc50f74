"""CheXpert: path prefixes, the frontal filter, per-label uncertainty policies, splits and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from tests.unit.datasets.fixtures_sources import CHEXPERT_LABELS as FIXTURE_LABELS
from tests.unit.datasets.fixtures_sources import chexpert_value, write_chexpert
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import CHEXPERT_LABELS, CHEXPERT_TASKS, load_source

RAW = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": np.nan}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_chexpert(tmp_path_factory.mktemp("chexpert"))


def _raw(table, names) -> np.ndarray:
    """The raw train.csv cells (1 / 0 / -1 / NaN) of the table's train+val rows, from the fixture's
    formula."""
    rows = []
    for image_id in table.frame.loc[table.frame["split"] != "test", "image_id"]:
        patient, study, view = image_id.split("/")[1:]
        r = (int(patient[7:]) - 1) * 4 + (int(study[5:]) - 1) * 2 + int(view[4]) - 1
        rows.append([RAW[chexpert_value(r, FIXTURE_LABELS.index(n))] for n in names])
    return np.array(rows)


def test_label_sets():
    assert CHEXPERT_LABELS == FIXTURE_LABELS
    # the reference's class order: a released CheXpert head's five outputs, in this order
    assert CHEXPERT_TASKS == ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")


def test_five_task_labels_come_in_the_reference_order(root):
    table = load_source("chexpert", root)
    assert table.label_names == CHEXPERT_TASKS
    train = (table.frame["split"] != "test").to_numpy()
    raw = _raw(table, ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"))
    column_one = np.where(raw[:, 0] == -1, 0.0, np.nan_to_num(raw[:, 0]))  # Cardiomegaly, U-Zeros
    np.testing.assert_array_equal(table.labels[train][:, 0], column_one)


def test_val_fraction_zero_keeps_every_train_image_in_train(root):
    table = load_source("chexpert", root, val_fraction=0)
    assert table.split_counts() == {"train": 20, "val": 0, "test": 3}  # all 20 train.csv frontal rows
    assert table.notes["val_fraction"] == 0.0
    with pytest.raises(DataError, match=r"val_fraction=1\.0 must lie in \[0, 1\)"):
        load_source("chexpert", root, val_fraction=1.0)


@pytest.mark.parametrize("prefix", ["CheXpert-v1.0-small", "CheXpert-v1.0", ""])
def test_path_prefix_is_stripped(tmp_path, prefix):
    table = load_source("chexpert", write_chexpert(tmp_path, prefix=prefix))
    assert table.frame["image_id"].iloc[0] == "train/patient00001/study1/view1_frontal.jpg"
    assert (table.frame["path"].iloc[0]
            == str((tmp_path / "train/patient00001/study1/view1_frontal.jpg").resolve()))


def test_frontal_filter(root):
    frontal = load_source("chexpert", root)
    assert len(frontal) == 10 * 2 + 3
    assert frontal.frame["image_id"].str.contains("frontal").all()
    both = load_source("chexpert", root, frontal=False)
    assert len(both) == 2 * len(frontal)


def test_valid_csv_is_the_test_split_and_train_is_split_by_patient(root):
    table = load_source("chexpert", root, val_fraction=0.2)
    f = table.frame
    assert set(f.loc[f["split"] == "test", "patient_id"]) == {"patient64541", "patient64542", "patient64543"}
    assert f.loc[f["split"] == "test", "image_id"].str.startswith("valid/").all()
    assert f.loc[f["split"] == "val", "patient_id"].nunique() == 2  # 20% of 10 training patients


def test_mixed_policy_is_the_default(root):
    table = load_source("chexpert", root)
    raw = _raw(table, CHEXPERT_TASKS)
    train = (table.frame["split"] != "test").to_numpy()
    ones = np.array([n in ("Atelectasis", "Edema") for n in CHEXPERT_TASKS])
    expected = np.where(raw == -1, np.broadcast_to(ones, raw.shape), np.nan_to_num(raw, nan=0.0))
    assert (raw == -1).any(axis=0).all() and np.isnan(raw).any()  # the fixture exercises every case
    np.testing.assert_array_equal(table.labels[train], expected)
    assert table.mask.all()
    assert table.notes["uncertainty"] == {"Atelectasis": "ones", "Cardiomegaly": "zeros",
                                          "Consolidation": "zeros",
                                          "Edema": "ones", "Pleural Effusion": "zeros"}


def test_u_ignore_masks_exactly_the_uncertain_entries(root):
    table = load_source("chexpert", root, uncertainty="ignore")
    raw = _raw(table, CHEXPERT_TASKS)
    train = (table.frame["split"] != "test").to_numpy()
    np.testing.assert_array_equal(table.mask[train], (raw != -1).astype(np.uint8))
    np.testing.assert_array_equal(table.labels[train], (raw == 1).astype(np.float32))
    assert table.mask[~train].all()


def test_per_label_policy_overrides_the_mixed_default(root):
    table = load_source("chexpert", root, uncertainty={"Cardiomegaly": "ones", "Edema": "ignore"})
    raw = _raw(table, CHEXPERT_TASKS)
    train = (table.frame["split"] != "test").to_numpy()
    j = {n: i for i, n in enumerate(CHEXPERT_TASKS)}
    unc = raw == -1
    assert (table.labels[train][unc[:, j["Cardiomegaly"]], j["Cardiomegaly"]] == 1).all()
    assert (table.labels[train][unc[:, j["Atelectasis"]], j["Atelectasis"]] == 1).all()  # still U-Ones
    assert (table.labels[train][unc[:, j["Consolidation"]], j["Consolidation"]] == 0).all()
    np.testing.assert_array_equal(table.mask[train][:, j["Edema"]], (~unc[:, j["Edema"]]).astype(np.uint8))


def test_fourteen_label_mode(root):
    table = load_source("chexpert", root, labels="14label", uncertainty={"No Finding": "ignore"})
    assert table.label_names == CHEXPERT_LABELS
    raw = _raw(table, CHEXPERT_LABELS)
    train = (table.frame["split"] != "test").to_numpy()
    j = CHEXPERT_LABELS.index("No Finding")
    np.testing.assert_array_equal(table.mask[train][:, j], (raw[:, j] != -1).astype(np.uint8))
    k = CHEXPERT_LABELS.index("Support Devices")  # not in the mixed policy: U-Zeros
    np.testing.assert_array_equal(table.labels[train][:, k], (raw[:, k] == 1).astype(np.float32))


def test_policy_errors(root):
    with pytest.raises(DataError, match=r"uncertainty\['Edema'\]='maybe'"):
        load_source("chexpert", root, uncertainty={"Edema": "maybe"})
    with pytest.raises(DataError, match="unknown label.*'Edmea'"):
        load_source("chexpert", root, uncertainty={"Edmea": "ones"})
    with pytest.raises(DataError, match="labels='all'"):
        load_source("chexpert", root, labels="all")
    with pytest.raises(DataError, match="'Effusion'"):
        load_source("chexpert", root, labels=["Edema", "Effusion"])


def test_bad_label_value_names_file_line_and_column(tmp_path):
    root = write_chexpert(tmp_path)
    lines = (root / "train.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",2.0"
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.csv: line 4, column 'Support Devices': value '2\.0'"):
        load_source("chexpert", root, labels="14label")


def test_missing_column_names_file_and_column(tmp_path):
    root = write_chexpert(tmp_path)
    text = (root / "valid.csv").read_text()
    (root / "valid.csv").write_text(text.replace("Pleural Effusion", "Pleural_Effusion", 1))
    with pytest.raises(DataError, match=r"valid\.csv: missing column 'Pleural Effusion'"):
        load_source("chexpert", root)


def test_path_without_patient_folder(tmp_path):
    root = write_chexpert(tmp_path)
    text = (root / "train.csv").read_text()
    (root / "train.csv").write_text(text.replace("train/patient00002/study1", "train/p2/study1", 1))
    with pytest.raises(DataError, match=r"train\.csv: line 6: Path 'train/p2/study1/view1_frontal\.jpg'"):
        load_source("chexpert", root)


def test_duplicate_path_and_missing_image(tmp_path):
    root = write_chexpert(tmp_path)
    (root / "train/patient00003/study2/view1_frontal.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 23 listed image\(s\) not "
                                        r"found.*patient00003/study2/view1_frontal"):
        load_source("chexpert", root)
    assert len(load_source("chexpert", root, missing="skip")) == 22
    lines = (root / "valid.csv").read_text().splitlines()
    (root / "valid.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(DataError, match=r"valid\.csv: line 8: duplicate Path"):
        load_source("chexpert", root, missing="skip")


def test_no_frontal_image_in_valid_is_an_empty_split(tmp_path):
    root = write_chexpert(tmp_path)
    text = (root / "valid.csv").read_text()
    (root / "valid.csv").write_text(text.replace(",Frontal,", ",Lateral,"))
    with pytest.raises(DataError, match=r"valid\.csv: no frontal images \(test split would be empty\)"):
        load_source("chexpert", root)
