"""Hyperparameter importance for the objective, with Optuna's own evaluators and a stability check.

The study's scored trials are rebuilt into an in-memory Optuna study (`optuna.trial.create_trial`,
distributions inferred from the observed values; analysis/tables.KnobInfo), then ranked by fANOVA
(`FanovaImportanceEvaluator`) with PED-ANOVA (`PedAnovaImportanceEvaluator`) beside it. Bootstrap
resamples of the trials give each ordered pair of knobs the share of resamples in which the order
holds; the report only says "A matters more than B" when that share is >= STABILITY_THRESHOLD.
"""
from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thoraxmae.analysis.tables import KnobInfo

log = logging.getLogger(__name__)

STABILITY_THRESHOLD = 0.8  # an order is stated when it holds in >= 80% of bootstrap resamples
MIN_TRIALS = 5  # fewer scored trials than this: importance is not ranked


@dataclass
class KnobImportance:
    knob: str
    fanova: float  # share of the objective's variance (fANOVA, all trials; sums to 1)
    fanova_low: float  # 2.5th / 97.5th percentile over the bootstrap resamples
    fanova_high: float
    ped_anova: float  # PED-ANOVA importance (normalised), nan when it could not be computed
    p_first: float  # share of resamples in which this knob ranks first


@dataclass
class OrderStatement:
    """Whether `higher` matters more than `lower` (adjacent in the fANOVA ranking)."""

    higher: str
    lower: str
    support: float  # share of resamples with importance(higher) > importance(lower)
    stable: bool

    def text(self, threshold: float = STABILITY_THRESHOLD) -> str:
        pct = f"{self.support:.0%} of resamples"
        if self.stable:
            return f"`{self.higher}` matters more than `{self.lower}` ({pct}, threshold {threshold:.0%})"
        return (f"`{self.higher}` and `{self.lower}` cannot be told apart (order holds in {pct}, "
                f"below the {threshold:.0%} threshold)")


@dataclass
class ImportanceResult:
    ranked: bool
    reason: str  # why importance cannot be ranked ("" when ranked)
    rows: list[KnobImportance] = field(default_factory=list)  # most important first
    statements: list[OrderStatement] = field(default_factory=list)
    pairwise: pd.DataFrame | None = None  # [knob, knob] share of resamples with row > column
    n_trials: int = 0
    n_bootstrap: int = 0
    threshold: float = STABILITY_THRESHOLD
    constant: list[str] = field(default_factory=list)  # searched knobs with one observed value

    @property
    def order(self) -> list[str]:
        return [r.knob for r in self.rows]


def build_optuna_study(scored: pd.DataFrame, infos: list[KnobInfo], mode: str):
    """An in-memory Optuna study holding one COMPLETE trial per scored trial (value = objective)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {i.name: optuna_distribution(i) for i in infos}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    trials = []
    for row in scored[["trial_id", "objective", *dists]].to_dict("records"):
        params = {i.name: _python_value(i, row[i.name]) for i in infos}
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(row["objective"]),
                                                user_attrs={"trial_id": str(row["trial_id"])}))
    study.add_trials(trials)
    return study


def optuna_distribution(info: KnobInfo):
    """float (log when KnobInfo says so), int or categorical, over the observed range or choices."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if info.kind == "categorical":
        return CategoricalDistribution(info.choices)
    if info.kind == "int":
        return IntDistribution(int(info.low), int(info.high))
    return FloatDistribution(info.low, info.high, log=info.log)


def compute_importance(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, n_bootstrap: int = 40,
                       seed: int = 0, threshold: float = STABILITY_THRESHOLD) -> ImportanceResult:
    """fANOVA and PED-ANOVA importances of the varied knobs, and the bootstrap rank stability."""
    varied = [i for i in infos if i.varied]
    constant = [i.name for i in infos if not i.varied]
    n = len(scored)
    if n < MIN_TRIALS:
        return ImportanceResult(False, f"{n} scored trial(s), at least {MIN_TRIALS} are needed", n_trials=n,
                                threshold=threshold, constant=constant)
    if len(varied) < 2:
        return ImportanceResult(False, f"{len(varied)} knob(s) varied across trials, at least 2 are needed",
                                n_trials=n, threshold=threshold, constant=constant)
    full = _fanova(build_optuna_study(scored, varied, mode), seed)
    ped = _ped_anova(build_optuna_study(scored, varied, mode))
    boot = _bootstrap(scored, varied, mode, n_bootstrap, seed)  # [B, K] fANOVA importances
    names = [i.name for i in varied]
    order = sorted(names, key=lambda k: -full[k])
    idx = {k: names.index(k) for k in names}
    wins = (boot[:, :, None] > boot[:, None, :]).mean(axis=0)  # [K, K] share with row > column
    pairwise = pd.DataFrame(wins, index=names, columns=names).loc[order, order]
    firsts = np.bincount(boot.argmax(axis=1), minlength=len(names)) / max(len(boot), 1)
    rows = [KnobImportance(knob=k, fanova=full[k], fanova_low=float(np.percentile(boot[:, idx[k]], 2.5)),
                           fanova_high=float(np.percentile(boot[:, idx[k]], 97.5)), ped_anova=ped.get(k, np.nan),
                           p_first=float(firsts[idx[k]])) for k in order]
    statements = [OrderStatement(a, b, float(pairwise.loc[a, b]), bool(pairwise.loc[a, b] >= threshold))
                  for a, b in itertools.pairwise(order)]
    return ImportanceResult(True, "", rows, statements, pairwise, n, n_bootstrap, threshold, constant)


def _fanova(study, seed: int, n_trees: int = 64) -> dict[str, float]:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    return {k: float(v) for k, v in get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)).items()}


def _ped_anova(study) -> dict[str, float]:
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    if any("too small" in str(w.message) for w in caught):
        log.info("PED-ANOVA: too few trials for its top quantile; not reported")
        return {}
    return {k: float(v) for k, v in values.items()}


def _bootstrap(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, n_bootstrap: int, seed: int) -> np.ndarray:
    """[B, K] fANOVA importances on trials resampled with replacement (32 trees each)."""
    rng = np.random.default_rng(seed)
    names = [i.name for i in infos]
    out = np.zeros((n_bootstrap, len(names)))
    for b in range(n_bootstrap):
        sample = scored.iloc[rng.integers(0, len(scored), len(scored))].reset_index(drop=True)
        imp = _fanova(build_optuna_study(sample, infos, mode), seed + b + 1, n_trees=32)
        out[b] = [imp.get(k, 0.0) for k in names]
    return out


def _python_value(info: KnobInfo, value):
    if info.kind == "int":
        return int(value)
    if info.kind == "float":
        return float(value)
    for choice in info.choices:  # the exact choice object (a numpy scalar is not a valid choice)
        if choice == value:
            return choice
    return value
