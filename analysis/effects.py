"""Marginal effect of each knob and the interaction of the top two.

Marginal effect: the scored trials binned by the knob's value (quantile bins, or one bin per value
when it took few values), the mean objective per bin with a bootstrap 95% CI, and beside it the 1-D
partial dependence of a random-forest surrogate fitted to all knobs. Interaction: the surrogate's
2-D partial dependence over the two most important knobs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from thoraxmae.analysis.tables import KnobInfo, fmt, is_missing, numeric_matrix

MAX_BINS = 5
FEW_VALUES = 6  # a knob with at most this many distinct values gets one bin per value
MIN_TRIALS_SURROGATE = 5
GRID_1D, GRID_2D = 20, 12
CONFOUNDED = 3  # bin means differing this many times more than the partial dependence: other knobs at work


@dataclass
class EffectBin:
    label: str
    center: float  # numeric position (index of the choice for a non-numeric categorical)
    n: int
    mean: float
    ci_low: float  # bootstrap 95% CI of the mean (nan for a single trial)
    ci_high: float


@dataclass
class MarginalEffect:
    knob: str
    info: KnobInfo
    bins: list[EffectBin]
    pd_x: np.ndarray | None  # surrogate partial dependence: knob values [G] -> objective [G]
    pd_y: np.ndarray | None
    best: EffectBin | None  # the bin with the best mean
    swing: float  # |best bin mean - worst bin mean|

    @property
    def pd_swing(self) -> float:
        """max - min of the surrogate's partial dependence (nan without a surrogate)."""
        return float(np.ptp(self.pd_y)) if self.pd_y is not None else float("nan")

    @property
    def effect_range(self) -> float:
        """How much the objective moves with this knob: the partial dependence's range (other knobs
        averaged out) when there is a surrogate, else the spread of the bin means (nan without bins)."""
        if self.pd_y is not None:
            return self.pd_swing
        return self.swing if self.bins else float("nan")

    def clear(self, mode: str) -> bool:
        """The best bin's 95% CI lies entirely beyond the worst bin's."""
        sized = [b for b in self.bins if b.n > 1]
        if self.best is None or self.best.n < 2 or len(sized) < 2:
            return False
        if mode == "max":
            return self.best.ci_low > min(b.ci_high for b in sized if b is not self.best)
        return self.best.ci_high < max(b.ci_low for b in sized if b is not self.best)

    def verdict(self, mode: str) -> str:
        """few (too few distinct values) | confounded (bins differ through other knobs) | clear | unclear."""
        if self.best is None or len(self.bins) < 2:
            return "few"
        if self.pd_y is not None and self.pd_swing < self.swing / CONFOUNDED:
            return "confounded"
        return "clear" if self.clear(mode) else "unclear"

    def takeaway(self, mode: str) -> str:
        kind = self.verdict(mode)
        if kind == "few":
            return f"`{self.knob}`: too few distinct values to show an effect"
        verdict = {"confounded": "the bins differ mostly through other knobs (the partial dependence is "
                                 "nearly flat)",
                   "clear": "a clear effect (best bin's CI clear of the worst's)",
                   "unclear": "no clear effect (bin CIs overlap)"}[kind]
        forest = f", the forest's partial dependence by {self.pd_swing:.4f}" if self.pd_y is not None else ""
        return (f"`{self.knob}`: best around {self.best.label} (mean {self.best.mean:.4f}, n={self.best.n}); "
                f"bin means differ by {self.swing:.4f}{forest}: {verdict}")


@dataclass
class Interaction:
    x_knob: str
    y_knob: str
    x_values: np.ndarray  # [NX] grid of x_knob
    y_values: np.ndarray  # [NY] grid of y_knob
    z: np.ndarray  # [NY, NX] surrogate partial dependence of the objective
    best_x: float | str
    best_y: float | str
    best_value: float
    x_labels: list[str]
    y_labels: list[str]


def fit_surrogate(scored: pd.DataFrame, infos: list[KnobInfo], seed: int = 0):
    """A random forest objective ~ knobs (log10 for log knobs), or None with too few trials."""
    from sklearn.ensemble import RandomForestRegressor

    x = numeric_matrix(scored, infos)  # [N, K]
    keep = np.isfinite(x).all(axis=1)
    if keep.sum() < MIN_TRIALS_SURROGATE or x.shape[1] == 0:
        return None, x[keep]
    model = RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed)
    model.fit(x[keep], scored["objective"].to_numpy(dtype=float)[keep])
    return model, x[keep]


def marginal_effects(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, n_bootstrap: int = 200,
                     seed: int = 0, surrogate=None,
                     features: np.ndarray | None = None) -> list[MarginalEffect]:
    """One MarginalEffect per knob (in the order of `infos`)."""
    rng = np.random.default_rng(seed)
    y = scored["objective"].to_numpy(dtype=float)
    out = []
    for j, info in enumerate(infos):
        bins = _bins(scored[info.name].tolist(), y, info, rng, n_bootstrap)
        pd_x = pd_y = None
        if surrogate is not None and info.varied:
            pd_x, pd_y = _partial_1d(surrogate, features, j, info)
        means = [b.mean for b in bins]
        best = ((bins[int(np.argmax(means))] if mode == "max" else bins[int(np.argmin(means))])
                if bins else None)
        swing = float(max(means) - min(means)) if bins else 0.0
        out.append(MarginalEffect(info.name, info, bins, pd_x, pd_y, best, swing))
    return out


def interaction(infos: list[KnobInfo], knobs: tuple[str, str], mode: str, surrogate,
                features: np.ndarray) -> Interaction | None:
    """The surrogate's 2-D partial dependence over two knobs (None without a surrogate)."""
    if surrogate is None:
        return None
    names = [i.name for i in infos]
    i, j = names.index(knobs[0]), names.index(knobs[1])
    res = _partial_dependence(surrogate, features, [(i, j)], GRID_2D)
    gx, gy = res["grid_values"]
    z = np.asarray(res["average"][0]).T  # [NX, NY] -> [NY, NX]
    flat = int(np.argmax(z)) if mode == "max" else int(np.argmin(z))
    row, col = np.unravel_index(flat, z.shape)
    xv, yv = _from_feature(infos[i], gx), _from_feature(infos[j], gy)
    return Interaction(knobs[0], knobs[1], np.asarray(gx), np.asarray(gy), z, xv[col], yv[row],
                       float(z[row, col]),
                       [_label(v) for v in xv], [_label(v) for v in yv])


def _bins(values: list, y: np.ndarray, info: KnobInfo, rng: np.random.Generator,
          n_boot: int) -> list[EffectBin]:
    present = [k for k, v in enumerate(values) if not is_missing(v)]
    if not present:
        return []
    vals = [values[k] for k in present]
    ys = y[present]
    distinct = sorted(set(vals), key=lambda v: (str(type(v)), v))
    if not info.numeric or len(distinct) <= FEW_VALUES:
        groups = [(_label(v), float(v) if info.numeric else float(c),
                   ys[[k for k, x in enumerate(vals) if x == v]])
                  for c, v in enumerate(distinct)]
    else:
        x = np.array(vals, dtype=float)
        t = np.log10(x) if info.log else x
        nb = int(np.clip(len(vals) // 6, 2, MAX_BINS))
        edges = np.quantile(t, np.linspace(0, 1, nb + 1))
        which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, nb - 1)
        groups = []
        for b in range(nb):
            sel = which == b
            if sel.any():
                lo, hi = x[sel].min(), x[sel].max()
                center = float(10 ** np.median(t[sel])) if info.log else float(np.median(x[sel]))
                label = _label(lo) if _label(lo) == _label(hi) else f"{_label(lo)}–{_label(hi)}"
                groups.append((label, center, ys[sel]))
    return [_bin(label, center, g, rng, n_boot) for label, center, g in groups]


def _bin(label: str, center: float, ys: np.ndarray, rng: np.random.Generator, n_boot: int) -> EffectBin:
    if len(ys) < 2 or n_boot < 1:
        return EffectBin(label, center, len(ys), float(ys.mean()), np.nan, np.nan)
    means = rng.choice(ys, size=(n_boot, len(ys)), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return EffectBin(label, center, len(ys), float(ys.mean()), float(lo), float(hi))


def _partial_dependence(model, features: np.ndarray, which: list, grid: int):
    """sklearn's partial dependence over the 5-95th percentiles of each feature, over its whole range
    when those percentiles coincide (a knob most trials share: sklearn refuses such a grid)."""
    from sklearn.inspection import partial_dependence

    try:
        return partial_dependence(model, features, which, grid_resolution=grid, kind="average")
    except ValueError as exc:
        if "percentiles are too close" not in str(exc):
            raise
        return partial_dependence(model, features, which, grid_resolution=grid, kind="average",
                                  percentiles=(0, 1))


def _partial_1d(model, features: np.ndarray, j: int, info: KnobInfo) -> tuple[np.ndarray, np.ndarray]:
    res = _partial_dependence(model, features, [j], GRID_1D)
    grid = np.asarray(res["grid_values"][0])
    x = 10 ** grid if info.log else grid
    return x, np.asarray(res["average"][0])


def _from_feature(info: KnobInfo, grid: np.ndarray) -> list:
    if info.numeric:
        return [float(10 ** g) if info.log else float(g) for g in grid]
    return [info.choices[round(float(g))] for g in grid]



def _label(v) -> str:
    """A bin or grid label: the report's formatter, 3 significant digits."""
    return fmt(v, 3)
