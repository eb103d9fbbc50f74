"""Deterministic patient-level splits: the same (patients, seed, fractions) give the same split,
whatever the row order, and no patient ever straddles two splits."""
from __future__ import annotations

import numpy as np

from thoraxmae.datasets.errors import DataError


def check_fraction(name: str, value: float, low_open: bool = True) -> float:
    """`value` in (0, 1) (or [0, 1) when `low_open` is False), else DataError naming the option."""
    ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise DataError(f"option {name}={value!r} must lie in {interval}")
    return float(value)


def _shuffled_patients(patient_ids: np.ndarray, seed: int) -> np.ndarray:
    unique = np.array(sorted(set(patient_ids.tolist())), dtype=object)
    return unique[np.random.default_rng(seed).permutation(len(unique))]


def _member(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    pick = set(chosen.tolist())
    return np.fromiter((v in pick for v in values.tolist()), dtype=bool, count=len(values))


def _count(fraction: float, n: int) -> int:
    return 0 if fraction == 0 else max(1, round(fraction * n))


def carve_val(patient_ids: np.ndarray, split: np.ndarray, *, seed: int, val_fraction: float,
              where: str, allow_zero: bool = False) -> np.ndarray:
    """Move a `val_fraction` of the patients of the "train" rows to "val". Returns a new split array.
    `allow_zero`: val_fraction 0 is accepted and moves nobody (a source whose val may be empty)."""
    check_fraction("val_fraction", val_fraction, low_open=not allow_zero)
    train = split == "train"
    order = _shuffled_patients(patient_ids[train], seed)
    n_val = _count(val_fraction, len(order))
    if n_val >= len(order):
        raise DataError(f"{where}: {len(order)} training patient(s) are too few to carve a validation split "
                        f"with val_fraction={val_fraction}")
    out = split.copy()
    out[train & _member(patient_ids, order[:n_val])] = "val"
    return out


def random_split(patient_ids: np.ndarray, *, seed: int, val_fraction: float, test_fraction: float,
                 where: str) -> np.ndarray:
    """train / val / test by patient, for sources without an official split."""
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    order = _shuffled_patients(patient_ids, seed)
    n_val, n_test = _count(val_fraction, len(order)), _count(test_fraction, len(order))
    if n_val + n_test >= len(order):
        raise DataError(f"{where}: {len(order)} patient(s) are too few for val_fraction={val_fraction} and "
                        f"test_fraction={test_fraction}")
    out = np.full(len(patient_ids), "train", dtype=object)
    out[_member(patient_ids, order[:n_val])] = "val"
    out[_member(patient_ids, order[n_val:n_val + n_test])] = "test"
    return out
