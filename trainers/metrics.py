"""Evaluation numbers: per-class ROC AUC (scikit-learn) on sigmoid/softmax scores, their mean, top-1
accuracy, and their bootstrap 95% CIs (docs/paper.md: report test once, with a CI).

The bootstrap resamples patients when the split has patient ids (every image of a drawn patient comes
along): NIH test patients have many follow-up images, and resampling images as if they were independent
gives intervals that are too narrow. Without ids it resamples images; the result says which (`unit`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import roc_auc_score


def per_class_auc(y: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """y, scores, mask: [n, K]. AUC of each class over its unmasked rows; NaN where a class has only
    one label value among them (AUC undefined)."""
    mask = np.ones_like(y, dtype=bool) if mask is None else mask.astype(bool)
    out = np.full(y.shape[1], math.nan)
    for k in range(y.shape[1]):
        keep = mask[:, k]
        yk = y[keep, k]
        if yk.size and 0 < yk.sum() < yk.size:
            out[k] = roc_auc_score(yk, scores[keep, k])
    return out


def mean_auc(aucs: np.ndarray) -> float:
    """Mean over the classes whose AUC is defined (NaN when none is)."""
    finite = aucs[np.isfinite(aucs)]
    return float(finite.mean()) if finite.size else math.nan


def accuracy(y_onehot: np.ndarray, scores: np.ndarray) -> float:
    """Top-1 accuracy of a multi-class problem; y_onehot, scores: [n, K]."""
    return float((y_onehot.argmax(1) == scores.argmax(1)).mean()) if len(y_onehot) else math.nan


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile intervals over `n_boot` resamples of `n_units` patients (or images): of the mean AUC,
    of each class's AUC ([K, 2], NaN where undefined) and of the accuracy (multi-class only)."""

    unit: Literal["patient", "image"]
    n_units: int
    n_boot: int
    mauc: tuple[float, float]
    per_class: np.ndarray
    acc: tuple[float, float] | None = None

    def metrics(self, prefix: str, label_names: Sequence[str]) -> dict[str, Any]:
        """{prefix}mauc_ci_low/high, {prefix}auc_ci_low|high/<label>, {prefix}acc_ci_low/high and
        {prefix}ci_unit ("patient"/"image", a string: a tag, not a metric)."""
        out: dict[str, Any] = {f"{prefix}mauc_ci_low": self.mauc[0], f"{prefix}mauc_ci_high": self.mauc[1],
                               f"{prefix}ci_unit": self.unit}
        for name, (lo, hi) in zip(label_names, self.per_class, strict=True):
            if math.isfinite(lo) and math.isfinite(hi):
                out[f"{prefix}auc_ci_low/{name}"], out[f"{prefix}auc_ci_high/{name}"] = float(lo), float(hi)
        if self.acc is not None:
            out[f"{prefix}acc_ci_low"], out[f"{prefix}acc_ci_high"] = self.acc
        return out


def resampling_units(n: int, patient_ids: Sequence | np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(row order grouped by unit, start of each unit in it, "patient"|"image"). Units are numbered by
    first appearance, so with one image per patient unit j is row j and both units draw the same rows."""
    ids = None if patient_ids is None else np.asarray(patient_ids, dtype=object)
    if ids is None or len(ids) != n or any(i is None or str(i) == "" for i in ids):
        return np.arange(n), np.arange(n + 1), "image"
    _, first, inverse = np.unique(ids.astype(str), return_index=True, return_inverse=True)
    unit_of_row = np.argsort(np.argsort(first))[inverse]  # [n] unit number by first appearance
    order = np.argsort(unit_of_row, kind="stable")  # rows grouped by unit, units in order
    starts = np.concatenate([[0], np.cumsum(np.bincount(unit_of_row))])
    return order, starts, "patient"


def draw_rows(rng: np.random.Generator, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The rows of one resample: as many units as there are, drawn with replacement, all rows of each."""
    n_units = len(starts) - 1
    drawn = rng.integers(0, n_units, n_units)  # [U]
    lengths = starts[drawn + 1] - starts[drawn]  # [U]
    # [R] unit start - its position
    offsets = np.repeat(starts[drawn] - np.cumsum(lengths) + lengths, lengths)
    return order[offsets + np.arange(lengths.sum())]


def bootstrap_ci(y: np.ndarray, scores: np.ndarray, mask: np.ndarray | None, n_boot: int, *, seed: int = 0,
                 patient_ids: Sequence | np.ndarray | None = None, multiclass: bool = False,
                 level: float = 0.95) -> BootstrapCI:
    """Bootstrap percentile CIs (see the module docstring); NaN intervals when n_boot is 0 or y is empty.
    A resample is a multiplicity per row, so each class's AUC is the tie-aware rank statistic on its
    scores sorted once (what per_class_auc computes, without re-sorting every resample)."""
    k = y.shape[1]
    order, starts, unit = resampling_units(len(y), patient_ids)
    nan2 = (math.nan, math.nan)
    if n_boot <= 0 or len(y) == 0:
        return BootstrapCI(unit, len(starts) - 1, 0, nan2, np.full((k, 2), math.nan),
                           nan2 if multiclass else None)
    rng = np.random.default_rng(seed)
    ranked = RankedScores(y, scores, mask)
    correct = (y.argmax(1) == scores.argmax(1)).astype(np.float64)  # [n]
    maucs, per_class, accs = (np.full(n_boot, math.nan), np.full((n_boot, k), math.nan),
                              np.full(n_boot, math.nan))
    for b in range(n_boot):
        weights = np.bincount(draw_rows(rng, order, starts), minlength=len(y)).astype(np.float64)  # [n]
        per_class[b] = ranked.aucs(weights)
        maucs[b] = mean_auc(per_class[b])
        accs[b] = float(weights @ correct / weights.sum())
    classes = np.array([_percentiles(per_class[:, j], level) for j in range(k)]).reshape(k, 2)
    return BootstrapCI(unit, len(starts) - 1, n_boot, _percentiles(maucs, level), classes,
                       _percentiles(accs, level) if multiclass else None)


class RankedScores:
    """Each class's unmasked rows sorted by score, with their tie groups: the AUC of any weighting of
    the rows is then a few cumulative sums (Mann-Whitney, ties counted half, as ROC AUC)."""

    def __init__(self, y: np.ndarray, scores: np.ndarray, mask: np.ndarray | None):
        mask = np.ones_like(y, dtype=bool) if mask is None else mask.astype(bool)
        self.columns = []
        for j in range(y.shape[1]):
            keep = np.flatnonzero(mask[:, j])
            rows = keep[np.argsort(scores[keep, j], kind="stable")]  # [m] ascending score
            s = scores[rows, j]
            groups = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, np.int64)
            self.columns.append((rows, y[rows, j] > 0.5, groups))

    def aucs(self, weights: np.ndarray) -> np.ndarray:
        """[K] AUC with row i counted weights[i] times; NaN where a class has no positive or no negative."""
        out = np.full(len(self.columns), math.nan)
        for j, (rows, positive, groups) in enumerate(self.columns):
            if not len(rows):
                continue
            w = weights[rows]
            wp = np.where(positive, w, 0.0)
            pos, neg = np.add.reduceat(wp, groups), np.add.reduceat(w - wp, groups)  # per tie group
            total_pos, total_neg = pos.sum(), neg.sum()
            if total_pos > 0 and total_neg > 0:
                below = np.cumsum(neg) - neg  # negatives scored lower than the group
                out[j] = float(pos @ (below + 0.5 * neg) / (total_pos * total_neg))
        return out


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def auc_metrics(prefix: str, label_names: Sequence[str], aucs: np.ndarray) -> dict[str, float]:
    """{prefix + label: auc} for the defined AUCs."""
    return {f"{prefix}{name}": float(a) for name,
            a in zip(label_names, aucs, strict=True) if math.isfinite(a)}
