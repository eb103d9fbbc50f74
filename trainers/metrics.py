"""Evaluation numbers: per-class ROC AUC (scikit-learn) on sigmoid/softmax scores, their mean, top-1
accuracy, and a bootstrap 95% CI of the mean AUC (docs/paper.md: report test once, with a CI)."""
from __future__ import annotations

import math
from collections.abc import Sequence

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


def bootstrap_mauc_ci(y: np.ndarray, scores: np.ndarray, mask: np.ndarray | None, n_boot: int,
                      seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean AUC over `n_boot` resamples of the rows (NaN, NaN when n_boot is 0)."""
    if n_boot <= 0 or len(y) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    mask = np.ones_like(y, dtype=bool) if mask is None else mask
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(y), len(y))
        m = mean_auc(per_class_auc(y[rows], scores[rows], mask[rows]))
        if math.isfinite(m):
            values.append(m)
    if not values:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def auc_metrics(prefix: str, label_names: Sequence[str], aucs: np.ndarray) -> dict[str, float]:
    """{prefix + label: auc} for the defined AUCs."""
    return {f"{prefix}{name}": float(a) for name, a in zip(label_names, aucs, strict=True) if math.isfinite(a)}
