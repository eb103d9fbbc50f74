"""Confirmation: the chosen search recipes and the reference recipe re-run with fresh seeds.

A search trial's score is one seed's, and it is the number the trial was selected by, so the search
alone cannot tell a better recipe from a lucky one. Confirmation runs (docs/mlflow-schema.md: role
`confirm`, tag `thoraxmae.recipe` = `trial-<trial_id>`, `median` or `reference`, param `seed`, and in a
pipeline study param `pretrain.seed`) repeat each recipe with the same seeds, so every difference is paired.

Two splits, two jobs:
- selection (`val/...`, the study metric at a run's best epoch): the recommended recipe is the one with the
  best mean over the confirmation's fresh seeds; val differences to the reference are shown beside.
- verdict (`test/...`, read once per run with the weights selected on val): each recipe minus the reference,
  paired by replicate (fine-tuning seed, and pre-training seed when the runs log several), with a t-based 95%
  CI over the replicates and a paired t-test whose p-values are Holm-adjusted across the k compared recipes.
  A recipe is `better`/`worse` only when its Holm-adjusted p is below ALPHA. Without a logged test metric the
  verdict falls back to the selection split, and says that it is not held out.

A candidate whose knobs equal the reference's is the reference: it is not a separate comparison (and the
study side runs it once, as the reference, tagged with the trial it came from). Over all recipes the pooled
seed-to-seed SD of the selection metric is the study's noise floor that importance claims are checked against.
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
from thoraxmae.study.spec.space import same_point

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # family-wise error rate of the verdicts (Holm across the compared recipes)
NOISE_FACTOR = 2.0  # an effect whose range is below this many noise-floor SDs is "within seed noise"
BETTER, WORSE, SAME, UNKNOWN = "better", "worse", "indistinguishable", "unknown"
PARAM_PRETRAIN_SEED = "pretrain.seed"  # the pre-training a pipeline confirmation run fine-tuned from

Replicate = tuple[int | None, int]  # (pre-training seed or None, fine-tuning seed): what a pair is matched on


@dataclass
class PairedDiff:
    """Recipe minus reference over the replicates both ran (positive: higher metric)."""

    n: int  # replicates in common
    mean: float
    ci: tuple[float, float]  # t-based 95% CI, not adjusted (nan with fewer than 2 pairs)
    p: float  # two-sided paired t-test (nan with fewer than 2 pairs)
    p_holm: float = math.nan  # Holm-adjusted across the compared recipes (nan: not in the family)
    verdict: str = UNKNOWN  # better | worse | indistinguishable | unknown (no test)


@dataclass
class RecipeRuns:
    label: str  # `trial-<id>`, `median` or `reference`
    trial_id: str | None  # the search trial whose recipe this repeats (the reference's when it is one)
    search_score: float  # that trial's search objective (nan without one)
    params: dict[str, Any]  # the recipe's searched knobs as its runs logged them
    scores: dict[Replicate, float]  # replicate -> the study metric (val) at the best epoch
    test: dict[Replicate, float]  # replicate -> the held-out metric (absent when not logged)
    mean: float
    ci: tuple[float, float]  # t-based 95% CI of the val mean over replicates (nan with one)
    sd: float  # val SD over replicates (nan with one)
    test_ci: tuple[float, float] = (math.nan, math.nan)
    paired: PairedDiff | None = None  # the verdict's difference (test); None for the reference or without it
    paired_val: PairedDiff | None = None  # the same on val (secondary: the split recipes were chosen on)
    same_as_reference: bool = False  # a candidate with the reference's knob values

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def seeds(self) -> list[int]:
        return sorted({s for _, s in self.scores})

    @property
    def pretrain_seeds(self) -> list[int]:
        return sorted({p for p, _ in self.scores if p is not None})

    @property
    def test_mean(self) -> float:
        return float(np.mean(list(self.test.values()))) if self.test else math.nan


@dataclass
class Confirmation:
    metric: str
    mode: str
    test_metric: str | None  # the held-out counterpart of the metric (`val/x` -> `test/x`), read once per run
    verdict_metric: str  # test_metric when the runs logged it, else the metric itself (not held out)
    stage: str  # the study's stage: what a replicate varies
    recipes: list[RecipeRuns]  # the reference first, then best val mean first
    recommended: str | None  # label of the best val mean over the fresh seeds (the reference included)
    noise_sd: float  # val SD over seeds pooled across recipes (nan when no recipe has 2 seeds)
    noise_dof: int
    n_runs: int  # confirmation runs found, whatever their state
    notes: list[str] = field(default_factory=list)  # runs left out or numbers not computed, and why

    @property
    def reference(self) -> RecipeRuns | None:
        return next((r for r in self.recipes if r.label == schema.RECIPE_REFERENCE), None)

    @property
    def candidates(self) -> list[RecipeRuns]:
        return [r for r in self.recipes if r.label != schema.RECIPE_REFERENCE]

    @property
    def compared(self) -> list[RecipeRuns]:
        """The Holm family: candidates that are not the reference and have a paired test."""
        return [r for r in self.candidates
                if r.paired is not None and not r.same_as_reference and math.isfinite(r.paired.p)]

    @property
    def held_out(self) -> bool:
        return self.verdict_metric != self.metric

    @property
    def best(self) -> RecipeRuns | None:
        return next((r for r in self.recipes if r.label == self.recommended), None)

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


def t_test_p(d: np.ndarray) -> float:
    """Two-sided one-sample t-test of mean(d) = 0 (nan with fewer than 2 values; 0 or 1 without spread)."""
    from scipy import stats

    if len(d) < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 1.0 if float(d.mean()) == 0.0 else 0.0
    t = float(d.mean()) / (sd / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the i-th smallest p times (m - i + 1),
    made monotone and capped at 1."""
    m = len(p)
    out = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def summarize_confirmation(runs: list[ConfirmRecord], trials: pd.DataFrame, knobs: tuple[str, ...],
                           metric: str,
                           mode: str, stage: str = "finetune") -> Confirmation:
    """Group the completed runs by recipe (one run per replicate), score them on both splits, pick the
    recommended recipe on val and judge every candidate against the reference on test (Holm-adjusted)."""
    notes: list[str] = []
    usable = _usable_runs(runs, metric, mode, notes)
    by_trial_run = {str(r["run_id"]): r for r in trials.to_dict("records")}
    by_label = {str(r["trial_id"]): r for r in trials.to_dict("records")}
    test_metric = held_out_metric(metric)
    recipes = []
    for label in sorted({r.recipe for r, _ in usable}):
        mine = [(r, s) for r, s in usable if r.recipe == label]
        recipes.append(_recipe_runs(label, mine, by_trial_run, by_label, knobs, test_metric))
    has_test = any(r.test for r in recipes)
    verdict_metric = test_metric if test_metric and has_test else metric
    if recipes and not has_test:
        missing = f"no run logged `{test_metric}`" if test_metric else f"`{metric}` has no test split"
        notes.append(f"{missing}: the verdicts use `{metric}`, the split the recipes were chosen on (not "
                     "held out)")
    ref = next((r for r in recipes if r.label == schema.RECIPE_REFERENCE), None)
    if ref is None and recipes:
        notes.append(f"no completed run of the `{schema.RECIPE_REFERENCE}` recipe: no paired comparison")
    for r in recipes:
        if ref is not None and r is not ref:
            r.same_as_reference = bool(r.params) and same_point(r.params, ref.params)
            r.paired_val = _paired(r.scores, ref.scores)
            r.paired = (_paired(r.test, ref.test) if verdict_metric != metric
                        else _paired(r.scores, ref.scores))
    _holm_verdicts([r for r in recipes if r.paired is not None and not r.same_as_reference], mode)
    sign = 1.0 if mode == "max" else -1.0
    recipes.sort(key=lambda r: (r is not ref, -sign * r.mean if math.isfinite(r.mean) else math.inf, r.label))
    ranked = sorted((r for r in recipes if math.isfinite(r.mean)),
                    key=lambda r: (-sign * r.mean, r is not ref))
    noise_sd, dof = _pooled_sd(recipes)
    if not math.isfinite(noise_sd) and recipes:
        notes.append("no recipe has 2 completed seeds: the seed-to-seed spread (noise floor) cannot be "
                     "measured")
    return Confirmation(metric, mode, test_metric, verdict_metric, stage, recipes,
                        ranked[0].label if ranked else None, noise_sd, dof, len(runs), notes)


def _holm_verdicts(family: list[RecipeRuns], mode: str) -> None:
    """Holm-adjust the paired tests of the recipes that have one; a verdict needs the adjusted p < ALPHA."""
    tested = [r for r in family if math.isfinite(r.paired.p)]
    for r, p_adj in zip(tested, holm([r.paired.p for r in tested]), strict=True):
        r.paired.p_holm = p_adj
        if p_adj < ALPHA:
            r.paired.verdict = BETTER if (r.paired.mean > 0) == (mode == "max") else WORSE
        else:
            r.paired.verdict = SAME


def _usable_runs(runs: list[ConfirmRecord], metric: str, mode: str,
                 notes: list[str]) -> list[tuple[ConfirmRecord, float]]:
    """Completed runs with a seed and a score, the latest per (recipe, replicate); the rest go into
    `notes`."""
    by_state: dict[str, list[str]] = {}
    kept: dict[tuple[str, Replicate], tuple[ConfirmRecord, float]] = {}
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
        duplicates += (r.recipe, replicate(r)) in kept
        kept[(r.recipe, replicate(r))] = (r, score)
    for state, items in by_state.items():
        notes.append(f"left out {len(items)} confirmation run(s) that {state}: {', '.join(items)}")
    if duplicates:
        notes.append(f"{duplicates} repeated run(s) of the same recipe and seed: the latest of each is used")
    return list(kept.values())


def replicate(r: ConfirmRecord) -> Replicate:
    """What a run is paired on: its pre-training seed (pipeline runs log `pretrain.seed`) and its seed."""
    text = r.params.get(PARAM_PRETRAIN_SEED)
    try:
        pretrain = int(text) if text is not None else None
    except ValueError:
        pretrain = None
    return pretrain, int(r.seed)


def _score(r: ConfirmRecord, metric: str, mode: str) -> float:
    """The metric at the run's best epoch (max for mode max), else its last logged value."""
    values = [v for _, v in r.history.get(metric, []) if math.isfinite(v)]
    if values:
        return float(max(values) if mode == "max" else min(values))
    return float(r.metrics.get(metric, math.nan))


def _recipe_runs(label: str, runs: list[tuple[ConfirmRecord, float]], by_run: dict, by_id: dict,
                 knobs: tuple[str, ...], test_metric: str | None) -> RecipeRuns:
    runs = sorted(runs, key=lambda x: replicate(x[0]))
    scores = {replicate(r): s for r, s in runs}
    test = {replicate(r): float(r.metrics[test_metric]) for r, _ in runs
            if test_metric and math.isfinite(r.metrics.get(test_metric, math.nan))}
    source = next((r.source_run for r, _ in runs if r.source_run), None)
    trial = by_run.get(source) if source else None
    if trial is None and label.startswith(schema.RECIPE_TRIAL_PREFIX):
        trial = by_id.get(label[len(schema.RECIPE_TRIAL_PREFIX):])
    first = runs[0][0]
    params = {k: parse_value(first.params[k]) for k in knobs if k in first.params}
    x = np.array(list(scores.values()), dtype=float)
    t = np.array(list(test.values()), dtype=float)
    return RecipeRuns(label=label, trial_id=str(trial["trial_id"]) if trial is not None else None,
                      search_score=float(trial["objective"]) if trial is not None else math.nan,
                      params=params,
                      scores=scores, test=test, mean=float(x.mean()), ci=t_interval(x),
                      sd=float(x.std(ddof=1)) if len(x) > 1 else math.nan, test_ci=t_interval(t))


def _paired(mine: dict[Replicate, float], ref: dict[Replicate, float]) -> PairedDiff:
    common = sorted(set(mine) & set(ref))
    d = np.array([mine[k] - ref[k] for k in common], dtype=float)
    if not len(d):
        return PairedDiff(0, math.nan, (math.nan, math.nan), math.nan)
    return PairedDiff(len(d), float(d.mean()), t_interval(d), t_test_p(d))


def _pooled_sd(recipes: list[RecipeRuns]) -> tuple[float, int]:
    """sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over recipes with at least 2 seeds."""
    sized = [r for r in recipes if r.n > 1]
    dof = sum(r.n - 1 for r in sized)
    if not dof:
        return math.nan, 0
    return float(math.sqrt(sum((r.n - 1) * r.sd ** 2 for r in sized) / dof)), dof
