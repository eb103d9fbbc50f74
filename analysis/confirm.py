"""Confirmation: the top search recipes and the reference recipe re-run with fresh seeds.

A search trial's score is one seed's, and it is the number the trial was selected by, so the search
alone cannot tell a better recipe from a lucky one. Confirmation runs (docs/mlflow-schema.md: role
`confirm`, tag `thoraxmae.recipe` = `trial-<trial_id>` or `reference`, param `seed`) repeat each recipe
with the same seeds. A run's score is the study metric at its best epoch (mode-aware), as for a trial.

Per recipe: the mean over seeds with a t-based 95% CI; the difference to the reference paired by seed
(same seed in both) with its t-based 95% CI, and a verdict from it; and over all recipes the pooled
seed-to-seed SD, the study's noise floor that importance claims are checked against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from thoraxmae.analysis.load import ConfirmRecord
from thoraxmae.analysis.tables import error_text, parse_value
from thoraxmae.study import schema

CONFIDENCE = 0.95
NOISE_FACTOR = 2.0  # an effect whose range is below this many noise-floor SDs is "within seed noise"
BETTER, WORSE, SAME, UNKNOWN = "better", "worse", "indistinguishable", "unknown"


@dataclass
class PairedDiff:
    """Recipe minus reference over the seeds both ran (positive: higher metric)."""

    n: int  # seeds in common
    mean: float
    ci: tuple[float, float]  # t-based 95% CI (nan with fewer than 2 pairs)
    verdict: str  # better | worse | indistinguishable | unknown (no interval)


@dataclass
class RecipeRuns:
    label: str  # `trial-<id>` or `reference`
    trial_id: str | None  # the search trial whose recipe this repeats
    search_score: float  # that trial's search objective (nan for the reference)
    params: dict[str, Any]  # the recipe's searched knobs as its runs logged them
    scores: dict[int, float]  # seed -> the study metric at the best epoch
    test: dict[int, float]  # seed -> the test metric (absent when not logged)
    mean: float
    ci: tuple[float, float]  # t-based 95% CI of the mean over seeds (nan with one seed)
    sd: float  # SD over seeds (nan with one seed)
    paired: PairedDiff | None = None  # None for the reference itself or without reference runs

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def test_mean(self) -> float:
        return float(np.mean(list(self.test.values()))) if self.test else math.nan


@dataclass
class Confirmation:
    metric: str
    mode: str
    test_metric: str | None  # the held-out counterpart of the metric (`val/x` -> `test/x`), read once per run
    recipes: list[RecipeRuns]  # the reference first, then best mean first
    noise_sd: float  # SD over seeds pooled across recipes (nan when no recipe has 2 seeds)
    noise_dof: int
    n_runs: int  # confirmation runs found, whatever their state
    notes: list[str] = field(default_factory=list)  # runs left out or numbers not computed, and why

    @property
    def reference(self) -> RecipeRuns | None:
        return next((r for r in self.recipes if r.label == schema.RECIPE_REFERENCE), None)

    @property
    def candidates(self) -> list[RecipeRuns]:
        return [r for r in self.recipes if r.label != schema.RECIPE_REFERENCE]

    def within_noise(self, effect_range: float) -> bool | None:
        """Whether an effect of this size is below NOISE_FACTOR x the noise floor (None: unknown)."""
        if not (math.isfinite(self.noise_sd) and math.isfinite(effect_range)):
            return None
        return effect_range < NOISE_FACTOR * self.noise_sd


def held_out_metric(metric: str) -> str | None:
    """`val/mauc` -> `test/mauc`, `val/acc` -> `test/acc`; None for a metric without a test split."""
    return "test/" + metric[len("val/"):] if metric.startswith("val/") else None


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """Two-sided t-based 95% CI of the mean (nan with fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, se = float(values.mean()), float(values.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    return mean - half, mean + half


def summarize_confirmation(runs: list[ConfirmRecord], trials: pd.DataFrame, knobs: tuple[str, ...], metric: str,
                           mode: str) -> Confirmation:
    """Group the completed runs by recipe (one run per seed), score them and compare with the reference."""
    notes: list[str] = []
    usable = _usable_runs(runs, metric, mode, notes)
    by_trial_run = {str(r["run_id"]): r for r in trials.to_dict("records")}
    by_label = {str(r["trial_id"]): r for r in trials.to_dict("records")}
    recipes = []
    for label in sorted({r.recipe for r, _ in usable}):
        mine = [(r, s) for r, s in usable if r.recipe == label]
        recipes.append(_recipe_runs(label, mine, by_trial_run, by_label, knobs, held_out_metric(metric)))
    ref = next((r for r in recipes if r.label == schema.RECIPE_REFERENCE), None)
    if ref is None and recipes:
        notes.append(f"no completed run of the `{schema.RECIPE_REFERENCE}` recipe: no paired comparison")
    for r in recipes:
        if ref is not None and r is not ref:
            r.paired = _paired(r, ref, mode)
    sign = 1.0 if mode == "max" else -1.0
    recipes.sort(key=lambda r: (r is not ref, -sign * r.mean if math.isfinite(r.mean) else math.inf, r.label))
    noise_sd, dof = _pooled_sd(recipes)
    if not math.isfinite(noise_sd) and recipes:
        notes.append("no recipe has 2 completed seeds: the seed-to-seed spread (noise floor) cannot be measured")
    return Confirmation(metric, mode, held_out_metric(metric), recipes, noise_sd, dof, len(runs), notes)


def _usable_runs(runs: list[ConfirmRecord], metric: str, mode: str,
                 notes: list[str]) -> list[tuple[ConfirmRecord, float]]:
    """Completed runs with a seed and a score, the latest per (recipe, seed); the rest go into `notes`."""
    by_state: dict[str, list[str]] = {}
    kept: dict[tuple[str, int], tuple[ConfirmRecord, float]] = {}
    duplicates = 0
    for r in sorted(runs, key=lambda r: (r.start_time or 0.0, r.run_id)):
        what = f"`{r.recipe}` seed {r.seed if r.seed is not None else '?'}"
        if r.status != schema.STATUS_COMPLETED:
            error = error_text(r.error) if r.error else ""
            state = "failed" if r.status == schema.STATUS_FAILED else f"are {r.status}"
            by_state.setdefault(state, []).append(what + (f" ({error})" if error else ""))
            continue
        if r.seed is None:
            by_state.setdefault(f"lack an integer `{schema.PARAM_SEED}` param", []).append(what)
            continue
        score = _score(r, metric, mode)
        if not math.isfinite(score):
            by_state.setdefault(f"logged no `{metric}`", []).append(what)
            continue
        duplicates += (r.recipe, r.seed) in kept
        kept[(r.recipe, r.seed)] = (r, score)
    for state, items in by_state.items():
        notes.append(f"left out {len(items)} confirmation run(s) that {state}: {', '.join(items)}")
    if duplicates:
        notes.append(f"{duplicates} repeated run(s) of the same recipe and seed: the latest of each is used")
    return list(kept.values())


def _score(r: ConfirmRecord, metric: str, mode: str) -> float:
    """The metric at the run's best epoch (max for mode max), else its last logged value."""
    values = [v for _, v in r.history.get(metric, []) if math.isfinite(v)]
    if values:
        return float(max(values) if mode == "max" else min(values))
    return float(r.metrics.get(metric, math.nan))


def _recipe_runs(label: str, runs: list[tuple[ConfirmRecord, float]], by_run: dict, by_id: dict,
                 knobs: tuple[str, ...], test_metric: str | None) -> RecipeRuns:
    runs = sorted(runs, key=lambda x: x[0].seed)
    scores = {r.seed: s for r, s in runs}
    test = {r.seed: float(r.metrics[test_metric]) for r, _ in runs
            if test_metric and math.isfinite(r.metrics.get(test_metric, math.nan))}
    source = next((r.source_run for r, _ in runs if r.source_run), None)
    trial = by_run.get(source) if source else None
    if trial is None and label.startswith(schema.RECIPE_TRIAL_PREFIX):
        trial = by_id.get(label[len(schema.RECIPE_TRIAL_PREFIX):])
    first = runs[0][0]
    params = {k: parse_value(first.params[k]) for k in knobs if k in first.params}
    x = np.array(list(scores.values()), dtype=float)
    return RecipeRuns(label=label, trial_id=str(trial["trial_id"]) if trial is not None else None,
                      search_score=float(trial["objective"]) if trial is not None else math.nan, params=params, scores=scores,
                      test=test, mean=float(x.mean()), ci=t_interval(x),
                      sd=float(x.std(ddof=1)) if len(x) > 1 else math.nan)


def _paired(r: RecipeRuns, ref: RecipeRuns, mode: str) -> PairedDiff:
    seeds = sorted(set(r.scores) & set(ref.scores))
    d = np.array([r.scores[s] - ref.scores[s] for s in seeds], dtype=float)
    if not len(d):
        return PairedDiff(0, math.nan, (math.nan, math.nan), UNKNOWN)
    lo, hi = t_interval(d)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        verdict = UNKNOWN
    elif lo > 0 or hi < 0:
        verdict = BETTER if (lo > 0) == (mode == "max") else WORSE
    else:
        verdict = SAME
    return PairedDiff(len(d), float(d.mean()), (lo, hi), verdict)


def _pooled_sd(recipes: list[RecipeRuns]) -> tuple[float, int]:
    """sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over recipes with at least 2 seeds."""
    sized = [r for r in recipes if r.n > 1]
    dof = sum(r.n - 1 for r in sized)
    if not dof:
        return math.nan, 0
    return float(math.sqrt(sum((r.n - 1) * r.sd ** 2 for r in sized) / dof)), dof
