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
    n_bootstrap: int = 0  # resamples asked for
    threshold: float = STABILITY_THRESHOLD
    constant: list[str] = field(default_factory=list)  # searched knobs with one observed value
    n_resamples: int = 0  # resamples the stability rests on (those whose objective varied)
    stability_note: str = ""  # why rank stability was not (fully) checked: resamples left out ("" when none)
    n_incomplete: int = 0  # scored trials left out for lacking a varied knob's value

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
        trials.append(optuna.trial.create_trial(params=params, distributions=dists,
                                                value=float(row["objective"]),
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
    """fANOVA and PED-ANOVA importances of the varied knobs, and the bootstrap rank stability.

    Never raises for a degenerate study: too few trials, fewer than two varied knobs or an objective
    that does not vary give `ranked=False` with the reason; resamples whose objective does not vary
    (tied trials) are left out of the stability check, and `stability_note` says so.
    """
    varied = [i for i in infos if i.varied]
    constant = [i.name for i in infos if not i.varied]
    complete = scored.dropna(subset=[i.name for i in varied]).reset_index(drop=True) if varied else scored
    n, dropped = len(complete), len(scored) - len(complete)
    base = {"n_trials": n, "n_bootstrap": n_bootstrap, "threshold": threshold, "constant": constant,
            "n_incomplete": dropped}
    if n < MIN_TRIALS:
        missing = f" ({dropped} more lack a knob's value)" if dropped else ""
        return ImportanceResult(False, f"{n} scored trial(s){missing}, at least {MIN_TRIALS} are "
                                       "needed", **base)
    if len(varied) < 2:
        return ImportanceResult(False, f"{len(varied)} knob(s) varied across trials, at least 2 are "
                                       "needed", **base)
    y = complete["objective"].to_numpy(dtype=float)
    if np.ptp(y) == 0:
        return ImportanceResult(False, f"the objective is {y[0]:.4g} in all {n} scored trials: no variance "
                                       "to attribute to the knobs", **base)
    full = _fanova(build_optuna_study(complete, varied, mode), seed)
    if full is None:
        return ImportanceResult(False, "fANOVA found no variance to attribute (every tree fitted a "
                                       "constant)", **base)
    ped = _ped_anova(build_optuna_study(complete, varied, mode))
    names = [i.name for i in varied]
    order = sorted(names, key=lambda k: -full[k])
    boot, skipped = _bootstrap(complete, varied, mode, n_bootstrap, seed)  # [B', K] fANOVA importances
    note = _stability_note(n_bootstrap, len(boot), skipped)
    rows, pairwise, statements = [], None, []
    if len(boot):
        idx = {k: names.index(k) for k in names}
        wins = (boot[:, :, None] > boot[:, None, :]).mean(axis=0)  # [K, K] share with row > column
        pairwise = pd.DataFrame(wins, index=names, columns=names).loc[order, order]
        firsts = np.bincount(boot.argmax(axis=1), minlength=len(names)) / len(boot)
        rows = [KnobImportance(knob=k, fanova=full[k], fanova_low=float(np.percentile(boot[:, idx[k]], 2.5)),
                               fanova_high=float(np.percentile(boot[:, idx[k]], 97.5)),
                               ped_anova=ped.get(k, np.nan),
                               p_first=float(firsts[idx[k]])) for k in order]
        statements = [OrderStatement(a, b, float(pairwise.loc[a, b]), bool(pairwise.loc[a, b] >= threshold))
                      for a, b in itertools.pairwise(order)]
    else:
        rows = [KnobImportance(k, full[k], np.nan, np.nan, ped.get(k, np.nan), np.nan) for k in order]
    return ImportanceResult(True, "", rows, statements, pairwise, n_resamples=len(boot), stability_note=note,
                            **base)


def _stability_note(asked: int, used: int, skipped: int) -> str:
    if asked <= 0:
        return "no bootstrap resamples were asked for (--bootstrap 0)"
    if used == 0:
        return (f"each of the {asked} bootstrap resamples drew only trials with one objective value (tied "
                "trials)")
    if skipped:
        return (f"{skipped} of {asked} resamples drew only trials with one objective value (tied trials) and "
                "were left out")
    return ""


def _fanova(study, seed: int, n_trees: int = 64) -> dict[str, float] | None:
    """fANOVA importances, or None when no tree found variance (tied trials)."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    try:
        values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, seed=seed))
    except RuntimeError as exc:
        if "zero total variance" not in str(exc):
            raise
        return None
    return {k: float(v) for k, v in values.items()}


def _ped_anova(study) -> dict[str, float]:
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    if any("too small" in str(w.message) or "same set of trials" in str(w.message) for w in caught):
        log.info("PED-ANOVA: too few trials (or too many ties) for its top quantile; not reported")
        return {}
    return {k: float(v) for k, v in values.items()}


def _bootstrap(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, n_bootstrap: int,
               seed: int) -> tuple[np.ndarray, int]:
    """([B', K] fANOVA importances on trials resampled with replacement (32 trees each), resamples left
    out because their objective did not vary)."""
    rng = np.random.default_rng(seed)
    names = [i.name for i in infos]
    out, skipped = [], 0
    y = scored["objective"].to_numpy(dtype=float)
    for b in range(max(n_bootstrap, 0)):
        pick = rng.integers(0, len(scored), len(scored))
        imp = None
        if np.ptp(y[pick]) > 0:
            imp = _fanova(build_optuna_study(scored.iloc[pick].reset_index(drop=True), infos, mode),
                          seed + b + 1,
                          n_trees=32)
        if imp is None:
            skipped += 1
            continue
        out.append([imp.get(k, 0.0) for k in names])
    return np.array(out, dtype=float).reshape(len(out), len(names)), skipped


def _python_value(info: KnobInfo, value):
    if info.kind == "int":
        return int(value)
    if info.kind == "float":
        return float(value)
    for choice in info.choices:  # the exact choice object (a numpy scalar is not a valid choice)
        if choice == value:
            return choice
    return value
