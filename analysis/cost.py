"""Objective vs compute: the Pareto front, and what ASHA's early stopping saved.

Compute is each trial's last `cost/gpu_hours` (or `cost/cpu_hours`), which the trainers log
cumulatively, plus its share of a shared pre-training (analysis/tables.py). A pruned trial would have
run `max_epochs` (its epochs, capped by ASHA's max_t); the epochs it did not run are priced at its own
cost per epoch (the study's median when it logged none), the share left out: pruning does not save it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thoraxmae.study import schema


@dataclass
class CostSummary:
    unit: str  # GPU-hours | CPU-hours
    total: float  # compute spent by every trial that logged cost
    points: pd.DataFrame  # scored trials: trial_id, status, cost_hours, objective, on_front
    front: list[str]  # trial ids on the Pareto front, cheapest first
    n_pruned: int
    epochs_run_pruned: float
    epochs_max_pruned: float
    cost_saved: float  # estimated compute the pruned trials did not spend
    saved_fraction: float  # cost_saved / (total + cost_saved)

    @property
    def epochs_saved(self) -> float:
        return self.epochs_max_pruned - self.epochs_run_pruned

    def takeaway(self, mode: str) -> str:
        if self.points.empty:
            return "No trial logged both cost and the objective."
        front = self.points[self.points["on_front"]]
        best = front.iloc[-1]
        cheap = front.iloc[0]
        text = (f"The best trial ({best['trial_id']}, {best['objective']:.4f}) cost {best['cost_hours']:.3g} "
                f"{self.unit}; the cheapest on the front ({cheap['trial_id']}, {cheap['objective']:.4f}) "
                f"{cheap['cost_hours']:.3g}.")
        if self.n_pruned:
            text += f" ASHA saved ~{self.cost_saved:.3g} {self.unit} ({self.saved_fraction:.0%})."
        return text


def cost_summary(trials: pd.DataFrame, scored: pd.DataFrame, mode: str) -> CostSummary:
    """Pareto front of (cost, objective) over the scored trials and ASHA's savings over the pruned ones."""
    unit = str(trials["cost_unit"].iloc[0]) if len(trials) else "CPU-hours"
    cost = trials["cost_hours"].to_numpy(dtype=float)
    total = float(np.nansum(cost))
    pts = scored[["trial_id", "status", "cost_hours", "objective"]].copy()
    pts = pts[np.isfinite(pts["cost_hours"].to_numpy(dtype=float))]
    pts = pts.sort_values(["cost_hours", "objective"], ascending=[True, mode == "min"]).reset_index(drop=True)
    pts["on_front"] = pareto_mask(pts["cost_hours"].to_numpy(dtype=float),
                                  pts["objective"].to_numpy(dtype=float),
                                  mode)
    saved, run, full, n = _asha_savings(trials)
    fraction = saved / (total + saved) if (total + saved) > 0 else 0.0
    return CostSummary(unit, total, pts, pts.loc[pts["on_front"], "trial_id"].tolist(), n, run, full, saved,
                       fraction)


def pareto_mask(cost: np.ndarray, objective: np.ndarray, mode: str) -> np.ndarray:
    """[N] True where no other trial is at most as expensive and strictly better. Input sorted by cost
    (ties: best objective first)."""
    sign = 1.0 if mode == "max" else -1.0
    mask = np.zeros(len(cost), dtype=bool)
    best = -math.inf
    for i, value in enumerate(sign * objective):
        if value > best:
            mask[i] = True
            best = value
    return mask


def _asha_savings(trials: pd.DataFrame) -> tuple[float, float, float, int]:
    """(compute saved, epochs run, epochs they would have run, number) over the pruned trials."""
    pruned = trials[trials["status"] == schema.STATUS_PRUNED]
    ran = pruned["epochs_run"].to_numpy(dtype=float)
    full = pruned["max_epochs"].to_numpy(dtype=float)
    if not len(pruned):
        return 0.0, 0.0, 0.0, 0
    full = np.where(np.isfinite(full), full, np.nanmax(trials["epochs_run"].to_numpy(dtype=float)))
    own = trials["own_cost_hours"] if "own_cost_hours" in trials else trials["cost_hours"]
    per_epoch_all = (own / trials["epochs_run"].where(trials["epochs_run"] > 0)).to_numpy(dtype=float)
    fallback = float(np.nanmedian(per_epoch_all)) if np.isfinite(per_epoch_all).any() else 0.0
    per_epoch = own.loc[pruned.index].to_numpy(dtype=float) / np.where(ran > 0, ran, np.nan)
    per_epoch = np.where(np.isfinite(per_epoch), per_epoch, fallback)
    missing = np.clip(full - ran, 0, None)
    return (float((missing * per_epoch).sum()), float(ran.sum()), float(np.maximum(full, ran).sum()),
            len(pruned))
