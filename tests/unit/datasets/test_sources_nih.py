"""ChestX-ray14: both csv variants, both folder layouts, official and paper splits, and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from tests.unit.datasets.fixtures_sources import (
    NIH_LABELS as FIXTURE_NIH_LABELS,
)
from tests.unit.datasets.fixtures_sources import (
    NihEntry,
    nih_entries,
    nih_test_patients,
    write_nih,
    write_nih_paper_splits,
)
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.sources.nih import NIH_LABELS


def _by_name(table):
    return {n: i for i, n in enumerate(table.frame["image_id"])}


def test_labels_follow_the_canonical_order():
    assert NIH_LABELS == FIXTURE_NIH_LABELS
    assert NIH_LABELS[0] == "Atelectasis" and NIH_LABELS[2] == "Effusion" and NIH_LABELS[13] == "Hernia"


@pytest.mark.parametrize("csv_name, trailing, sex", [("Data_Entry_2017_v2020.csv", False, False),
                                                     ("Data_Entry_2017.csv", True, True)])
def test_both_csv_variants_give_the_same_labels(tmp_path, csv_name, trailing, sex):
    table = load_source("nih",
                        write_nih(tmp_path, csv_name=csv_name, trailing_comma=trailing, sex_header=sex))
    entries = nih_entries()
    assert len(table) == len(entries) == 24
    row = _by_name(table)
    for e in entries:
        np.testing.assert_array_equal(table.labels[row[e.name]], e.multi_hot())
    healthy = [e.name for e in entries if e.findings == "No Finding"]
    assert healthy and all(table.labels[row[n]].sum() == 0 for n in healthy)
    assert table.mask.all()
    assert table.notes["csv"] == csv_name


def test_header_trailing_comma_without_row_commas(tmp_path):
    root = write_nih(tmp_path)
    csv = root / "Data_Entry_2017_v2020.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ","] + lines[1:]) + "\n")
    table = load_source("nih", root)
    assert table.positives()["Hernia"] == sum(e.findings == "Hernia" for e in nih_entries())


def test_nested_kaggle_layout(tmp_path):
    table = load_source("nih", write_nih(tmp_path, layout="nested"))
    folders = {p.split("/")[-3] for p in table.frame["path"]}
    assert folders == {"images_001", "images_002"}
    assert len(table) == 24


def test_official_lists_and_patient_level_val(tmp_path):
    table = load_source("nih", write_nih(tmp_path), split_seed=3, val_fraction=0.25)
    f = table.frame
    test_patients = {str(p) for p in nih_test_patients()}
    assert set(f.loc[f["split"] == "test", "patient_id"]) == test_patients
    val = set(f.loc[f["split"] == "val", "patient_id"])
    assert len(val) == round(0.25 * 9)  # 9 train_val patients
    assert not val & set(f.loc[f["split"] == "train", "patient_id"])


def test_patient_ids_drop_leading_zeros(tmp_path):
    root = write_nih(tmp_path)
    csv = root / "Data_Entry_2017_v2020.csv"
    text = csv.read_text()
    assert "00000001_000.png,No Finding,0,1," in text
    csv.write_text(text.replace("00000001_000.png,No Finding,0,1,", "00000001_000.png,No Finding,0,00001,"))
    table = load_source("nih", root)
    assert (table.frame.loc[table.frame["image_id"].str.startswith("00000001_"), "patient_id"] == "1").all()


def test_paper_split_files(tmp_path):
    root = write_nih(tmp_path / "nih")
    table = load_source("nih", root, split_files=write_nih_paper_splits(tmp_path / "splits"))
    f = table.frame
    assert set(f.loc[f["split"] == "val", "patient_id"]) == {"1", "2"}
    assert table.split_counts() == {"train": 13, "val": 5, "test": 6}
    assert table.notes["split_files"].endswith("splits")


def test_paper_split_labels_must_agree_with_the_csv(tmp_path):
    root = write_nih(tmp_path / "nih")
    splits = write_nih_paper_splits(tmp_path / "splits")
    path = splits / "train_official.txt"
    lines = path.read_text().splitlines()
    name, *bits = lines[1].split()
    bits[1] = "1" if bits[1] == "0" else "0"  # flip Cardiomegaly
    lines[1] = " ".join([name, *bits])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"train_official\.txt: line 2: labels of {name} disagree "
                                        r".*Cardiomegaly"):
        load_source("nih", root, split_files=splits)


def test_paper_split_line_needs_fourteen_labels(tmp_path):
    root = write_nih(tmp_path / "nih")
    splits = write_nih_paper_splits(tmp_path / "splits")
    (splits / "test_official.txt").write_text("00000004_000.png 0 1 0\n")
    with pytest.raises(DataError, match=r"test_official\.txt: line 1: expected an image name and 14 labels"):
        load_source("nih", root, split_files=splits)


def test_unknown_finding_names_row_and_string(tmp_path):
    entries = nih_entries()
    entries[4] = NihEntry(entries[4].name, entries[4].patient, "Cardiomegaly|Infiltrate")
    root = write_nih(tmp_path, entries=entries)
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv: line 6: unknown finding 'Infiltrate'"):
        load_source("nih", root)


def test_missing_column_names_file_and_column(tmp_path):
    root = write_nih(tmp_path)
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("Patient ID", "PatientID", 1))
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv: missing column 'Patient ID'"):
        load_source("nih", root)


def test_missing_images_error_names_file_and_count_or_skip(tmp_path):
    root = write_nih(tmp_path)
    (root / "images" / "00000002_000.png").unlink()
    (root / "images" / "00000002_001.png").unlink()
    with pytest.raises(DataError, match=r"2 of 24 listed image\(s\) not found .*00000002_000\.png"):
        load_source("nih", root)
    table = load_source("nih", root, missing="skip")
    assert len(table) == 22 and table.notes["skipped_missing"] == 2
    assert "00000002_000.png" not in set(table.frame["image_id"])


def test_duplicate_image_index(tmp_path):
    entries = nih_entries()
    root = write_nih(tmp_path, entries=entries + [entries[3]])
    with pytest.raises(DataError, match=rf"line 26: duplicate Image Index '{entries[3].name}' \(first on "
                                        r"line 5\)"):
        load_source("nih", root)


def test_patient_in_train_val_and_test_is_leakage(tmp_path):
    entries = nih_entries()
    # a follow-up of patient 4 (a test patient) listed in train_val_list.txt
    root = write_nih(tmp_path, entries=entries)
    moved = next(e.name for e in entries if e.patient == 4)
    test = [n for n in (root / "test_list.txt").read_text().split() if n != moved]
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    with (root / "train_val_list.txt").open("a") as fh:
        fh.write(moved + "\n")
    with pytest.raises(DataError, match=r"patient leakage.*'4'"):
        load_source("nih", root)


def test_empty_test_list_is_an_empty_split(tmp_path):
    root = write_nih(tmp_path)
    moved = (root / "test_list.txt").read_text().split()
    (root / "test_list.txt").write_text("")
    # keep the images listed somewhere but without leaking: drop the test patients' csv rows
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text("\n".join(line for line in csv.read_text().splitlines()
                             if line.split(",")[0] not in moved) + "\n")
    with pytest.raises(DataError, match="split 'test' is empty"):
        load_source("nih", root)


def test_list_entry_not_in_csv(tmp_path):
    root = write_nih(tmp_path)
    with (root / "test_list.txt").open("a") as fh:
        fh.write("99999999_000.png\n")
    with pytest.raises(DataError, match=r"test_list\.txt: line 7: image '99999999_000\.png' is not in the "
                                        r"Data_Entry"):
        load_source("nih", root)


def test_missing_list_file_and_bad_val_fraction(tmp_path):
    root = write_nih(tmp_path)
    with pytest.raises(DataError, match="val_fraction=1.5"):
        load_source("nih", root, val_fraction=1.5)
    (root / "test_list.txt").unlink()
    with pytest.raises(DataError, match=r"test_list\.txt: file not found"):
        load_source("nih", root)


def test_unlisted_csv_rows_are_left_out(tmp_path):
    root = write_nih(tmp_path)
    names = (root / "train_val_list.txt").read_text().split()
    (root / "train_val_list.txt").write_text("\n".join(names[1:]) + "\n")
    table = load_source("nih", root)
    assert len(table) == 23 and table.notes["unlisted"] == 1 and names[0] not in set(table.frame["image_id"])


def test_no_image_folder(tmp_path):
    root = write_nih(tmp_path)
    (root / "images").rename(root / "pngs")
    with pytest.raises(DataError, match="no images/ folder"):
        load_source("nih", root)
