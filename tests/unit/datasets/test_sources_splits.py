"""The shared helpers: patient-level splits and uncertainty policies."""
from __future__ import annotations

import numpy as np
import pytest

from tests.unit.datasets.fixtures_sources import nih_entries, write_nih
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.sources.splits import carve_val, random_split
from thoraxmae.datasets.sources.uncertainty import apply_policy, resolve_policy

PATIENTS = np.array([f"p{i // 3}" for i in range(60)], dtype=object)  # 20 patients x 3 images


def test_random_split_counts_and_patient_grouping():
    split = random_split(PATIENTS, seed=1, val_fraction=0.1, test_fraction=0.25, where="x")
    by_patient = {p: set(split[p == PATIENTS]) for p in set(PATIENTS)}
    assert all(len(s) == 1 for s in by_patient.values())
    counts = {s: sum(v == {s} for v in by_patient.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 13, "val": 2, "test": 5}


def test_split_ignores_row_order():
    order = np.random.default_rng(0).permutation(len(PATIENTS))
    a = random_split(PATIENTS, seed=4, val_fraction=0.2, test_fraction=0.2, where="x")
    b = random_split(PATIENTS[order], seed=4, val_fraction=0.2, test_fraction=0.2, where="x")
    np.testing.assert_array_equal(a[order], b)


def test_nih_split_ignores_csv_row_order(tmp_path):
    a = load_source("nih", write_nih(tmp_path / "a"), split_seed=2)
    b = load_source("nih", write_nih(tmp_path / "b", entries=nih_entries()[::-1]), split_seed=2)
    assert (dict(zip(a.frame["image_id"], a.frame["split"], strict=True))
            == dict(zip(b.frame["image_id"], b.frame["split"], strict=True)))


def test_carve_val_only_touches_train_rows():
    split = np.array(["train"] * 30 + ["test"] * 30, dtype=object)
    out = carve_val(PATIENTS, split, seed=0, val_fraction=0.3, where="x")
    # 3 of 10 train patients, 3 images each
    assert (out[30:] == "test").all() and (out == "val").sum() == 3 * 3


def test_too_few_patients_and_bad_fractions():
    with pytest.raises(DataError, match=r"list\.txt: 1 training patient\(s\) are too few"):
        carve_val(np.array(["a", "a"], dtype=object), np.array(["train", "train"], dtype=object), seed=0,
                  val_fraction=0.5, where="list.txt")
    with pytest.raises(DataError, match="test_fraction=1.0"):
        random_split(PATIENTS, seed=0, val_fraction=0.1, test_fraction=1.0, where="x")
    with pytest.raises(DataError, match="too few for val_fraction=0.5 and test_fraction=0.5"):
        random_split(PATIENTS, seed=0, val_fraction=0.5, test_fraction=0.5, where="x")


def test_policy_resolution_and_application():
    names = ("A", "B", "C")
    policy = resolve_policy({"B": "ignore"}, names, {"A": "ones"}, "zeros")
    assert policy == {"A": "ones", "B": "ignore", "C": "zeros"}
    raw = np.array([[-1, -1, -1], [1, np.nan, 0]], dtype=np.float32)
    labels, mask = apply_policy(raw, names, policy)
    np.testing.assert_array_equal(labels, [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 0, 1], [1, 1, 1]])
    assert resolve_policy("ones", names, {}, "zeros") == {n: "ones" for n in names}
    with pytest.raises(DataError, match="'U-Ones'"):
        resolve_policy("U-Ones", names, {}, "zeros")
