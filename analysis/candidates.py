"""Confirmation candidates that resist the winner's curse.

A search trial's score is one seed's. The raw top-1 of n noisy trials is the trial whose noise was luckiest
as much as the best recipe, so re-running it confirms less than its score promised (issue 21 measured
0.1 pt of mAUC lost this way on a paper-shaped surface with 0.23 pt seed noise). Two estimates pool what
neighbouring trials say instead:

- a Gaussian-process model (scikit-learn: a Matern kernel with a length scale per knob, plus a white-noise
  term that learns the seed noise) fitted to every scored trial, completed and pruned. A pruned trial is its
  best score up to the rung it reached, so the model carries its fidelity (log of epochs run over the full
  schedule) as one more input and every configuration is ranked by its prediction at the full schedule;
- the top-k median recipe of analysis/recipe.py (the median of the top trials' knob values), which is always
  one candidate.

`confirm_candidates` returns the median first, then the evaluated configurations best-predicted first, up to
`top`; `study_candidates` does the same from a study's MLflow runs, for `thoraxmae study confirm`.
__all__ re-exports `same_point` (study/spec/space.py) for callers that compare candidates.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from thoraxmae.analysis.load import StudyRecord
from thoraxmae.analysis.recipe import Recipe, distill_recipe
from thoraxmae.analysis.tables import (
    KnobInfo,
    is_missing,
    knob_infos,
    numeric_matrix,
    scored_trials,
    trial_table,
)
from thoraxmae.study import schema
from thoraxmae.study.spec.space import same_point

__all__ = ["Candidate", "confirm_candidates", "same_point", "smoothed_estimates", "snap", "study_candidates"]
MIN_TRIALS_MODEL = 5  # fewer scored trials: the model is not fitted, trials are ranked by their own score


@dataclass
class Candidate:
    label: str  # `trial-<id>` (an evaluated configuration) or `median` (the top-k median, run by no trial)
    trial_id: str | None
    run_id: str | None  # the trial run whose configuration this is (None for a median no trial ran)
    params: dict[str, Any]  # knob -> value, on the study's space
    estimate: float  # the model's full-schedule estimate (nan: no model)
    raw: float  # the trial's own search score (nan for the median)


def smoothed_estimates(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, seed: int = 0) -> np.ndarray:
    """[N] each scored trial's configuration as the model predicts it at the full schedule; the raw
    objective where the model cannot be fitted (too few trials, a knob without values)."""
    y = scored["objective"].to_numpy(dtype=float)
    x = _features(scored, infos)  # [N, K + 1]: knobs scaled to [0, 1], then the fidelity
    if len(y) < MIN_TRIALS_MODEL or not np.isfinite(x).all() or float(np.std(y)) == 0.0:
        return y.copy()
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-2, 1e2)) * Matern(np.ones(x.shape[1]), (0.05, 20.0), nu=2.5)
              + WhiteKernel(0.1, (1e-4, 1.0)))
    model = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=2, random_state=seed)
    with warnings.catch_warnings():  # a length scale at its bound only means "this knob hardly matters"
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    full = x.copy()
    full[:, -1] = 0.0  # the full schedule
    return model.predict(full)


def confirm_candidates(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, top: int,
                       space: dict[str, dict] | None = None, recipe: Recipe | None = None,
                       seed: int = 0) -> list[Candidate]:
    """Up to `top` recipes to confirm: the top-k median (snapped onto the space), then the evaluated
    configurations by their smoothed estimate, best first, each configuration once."""
    if scored.empty or top < 1:
        return []
    recipe = recipe or distill_recipe(scored, infos, mode, n_bootstrap=0, seed=seed)
    names = [i.name for i in infos]
    estimate = smoothed_estimates(scored, infos, mode, seed)
    sign = 1.0 if mode == "max" else -1.0
    order = sorted(range(len(scored)), key=lambda i: (-sign * estimate[i], _completed_first(scored, i),
                                                      -sign * float(scored["objective"].iloc[i])))
    median = {k.knob: snap(k.value, (space or {}).get(k.knob)) for k in recipe.knobs}
    out: list[Candidate] = []
    same = next((i for i in order if same_point(_row_params(scored, i, names), median)), None)
    out.append(_candidate(scored, same, names, estimate) if same is not None else
               Candidate(schema.RECIPE_MEDIAN, None, None, median, math.nan, math.nan))
    for i in order:
        if len(out) >= top:
            break
        params = _row_params(scored, i, names)
        if not any(same_point(params, c.params) for c in out):
            out.append(_candidate(scored, i, names, estimate))
    return out


def study_candidates(study: StudyRecord, top: int, top_fraction: float = 0.2, min_k: int = 3,
                     seed: int = 0) -> list[Candidate]:
    """confirm_candidates on a study read from MLflow (analysis.load.load_study)."""
    trials = trial_table(study)
    scored = scored_trials(trials)
    infos = knob_infos(trials, study.knobs, study.space)
    if scored.empty:
        return []
    recipe = distill_recipe(scored, infos, study.mode, top_fraction, min_k, n_bootstrap=0, seed=seed)
    return confirm_candidates(scored, infos, study.mode, top, study.space, recipe, seed)


def snap(value: Any, declared: dict | None) -> Any:
    """A recommended value onto the study's space: inside [low, high], on the step grid, int for int knobs."""
    if not declared or declared.get("type") == "categorical" or is_missing(value):
        return value
    low, high, step = declared.get("low"), declared.get("high"), declared.get("step")
    v = float(value)
    if step:
        v = float(low) + round((v - float(low)) / float(step)) * float(step)
    v = min(max(v, float(low)), float(high)) if low is not None and high is not None else v
    return round(v) if declared.get("type") == "int" else float(f"{v:.6g}")


def _features(scored: pd.DataFrame, infos: list[KnobInfo]) -> np.ndarray:
    x = numeric_matrix(scored, infos)  # [N, K]
    low, high = np.nanmin(x, axis=0, initial=np.inf), np.nanmax(x, axis=0, initial=-np.inf)
    span = np.where(high > low, high - low, 1.0)
    x = (x - low) / span
    run = scored["epochs_run"].to_numpy(dtype=float) if "epochs_run" in scored else np.ones(len(scored))
    full = scored["max_epochs"].to_numpy(dtype=float) if "max_epochs" in scored else run
    full = np.where(np.isfinite(full) & (full > 0), full, run)
    fidelity = np.log(np.clip(run / np.where(full > 0, full, 1.0), 1e-3, 1.0))  # 0 at the full schedule
    return np.column_stack([x, fidelity])


def _completed_first(scored: pd.DataFrame, i: int) -> int:
    return 0 if scored["status"].iloc[i] == schema.STATUS_COMPLETED else 1


def _row_params(scored: pd.DataFrame, i: int, names: list[str]) -> dict[str, Any]:
    row = scored.iloc[i]
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in names}


def _candidate(scored: pd.DataFrame, i: int, names: list[str], estimate: np.ndarray) -> Candidate:
    row = scored.iloc[i]
    return Candidate(f"{schema.RECIPE_TRIAL_PREFIX}{row['trial_id']}", str(row["trial_id"]),
                     str(row["run_id"]),
                     _row_params(scored, i, names), float(estimate[i]), float(row["objective"]))
