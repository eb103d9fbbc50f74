"""Every number of the report, computed from a loaded study into plain tables and dataclasses."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from thoraxmae.analysis.confirm import Confirmation, summarize_confirmation
from thoraxmae.analysis.cost import CostSummary, cost_summary
from thoraxmae.analysis.effects import (
    Interaction,
    MarginalEffect,
    fit_surrogate,
    interaction,
    marginal_effects,
)
from thoraxmae.analysis.importance import ImportanceResult, compute_importance
from thoraxmae.analysis.load import StudyRecord
from thoraxmae.analysis.pretraining import RecipeComparison, Reuse, compare_recipes, pretrain_reuse
from thoraxmae.analysis.recipe import Recipe, ReferenceRow, compare_reference, distill_recipe, recipe_spec
from thoraxmae.analysis.tables import KnobInfo, curve_table, knob_infos, scored_trials, trial_table
from thoraxmae.study import schema

log = logging.getLogger(__name__)


@dataclass
class AnalysisOptions:
    n_bootstrap: int = 40  # resamples for the importance rank stability (fANOVA refits)
    n_bootstrap_means: int = 1000  # resamples for the CIs of means (cheap)
    top_fraction: float = 0.2
    min_k: int = 3
    reference: dict[str, Any] | None = None  # default: study.schema.PAPER_RECIPE
    reference_name: str = "paper (Xiao et al. 2023)"
    seed: int = 0


@dataclass
class StudyAnalysis:
    study: StudyRecord
    options: AnalysisOptions
    trials: pd.DataFrame  # one row per trial (analysis/tables.trial_table)
    curves: pd.DataFrame  # one row per (trial, epoch) of the objective
    scored: pd.DataFrame  # completed + pruned trials with an objective
    infos: list[KnobInfo]
    importance: ImportanceResult
    effects: list[MarginalEffect]
    interaction: Interaction | None
    recipe: Recipe | None  # None when no trial is scored
    reference: list[ReferenceRow]
    cost: CostSummary
    recipe_spec: dict[str, Any] | None
    confirmation: Confirmation | None = None  # None without confirmation runs: the recipe is exploratory
    pretraining: RecipeComparison | None = None  # None unless the study varies its pre-training or encoder
    reuse: Reuse | None = None  # pre-training compute spent vs without reuse (None: no trial carries a key)

    @property
    def status_counts(self) -> dict[str, int]:
        counts = self.trials["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in schema.TRIAL_STATUSES}


def analyze(study: StudyRecord, options: AnalysisOptions | None = None) -> StudyAnalysis:
    """Tables first: importance, marginal effects, interaction, recipe, reference comparison, cost, the
    confirmation runs and the pre-training recipes (or encoders) compared. Never raises for a degenerate study
    (no scored trial, ties, a constant
    objective, one knob): each part that cannot be computed says why (its `reason`, or None)."""
    opts = options or AnalysisOptions()
    trials = trial_table(study)
    scored = scored_trials(trials)
    infos = knob_infos(trials, study.knobs, study.space)
    importance = compute_importance(scored, infos, study.mode, opts.n_bootstrap, opts.seed)
    order = importance.order + [i.name for i in infos if i.name not in importance.order]
    by_name = {i.name: i for i in infos}
    ordered = [by_name[k] for k in order]
    surrogate, features = fit_surrogate(scored, infos, opts.seed)
    effects = marginal_effects(scored, infos, study.mode, opts.n_bootstrap_means, opts.seed, surrogate,
                               features)
    effects = sorted(effects, key=lambda e: order.index(e.knob))
    inter = None
    if importance.ranked:
        inter = interaction(infos, (importance.order[0], importance.order[1]), study.mode, surrogate,
                            features)
    recipe = None if scored.empty else distill_recipe(scored, ordered, study.mode, opts.top_fraction,
                                                      opts.min_k,
                                                      opts.n_bootstrap_means, opts.seed)
    reference = [] if recipe is None else compare_reference(
        recipe, schema.PAPER_RECIPE if opts.reference is None else opts.reference)
    confirmation = summarize_confirmation(study.confirm, trials, study.knobs, study.metric, study.mode,
                                         study.stage) \
        if study.confirm else None
    pretraining = compare_recipes(study, trials)
    log.info("analysed %d trials (%d scored, %d confirmation runs) of study %s", len(trials), len(scored),
             len(study.confirm), study.name)
    return StudyAnalysis(study=study, options=opts, trials=trials, curves=curve_table(study), scored=scored,
                         infos=ordered, importance=importance, effects=effects, interaction=inter,
                         recipe=recipe,
                         reference=reference, cost=cost_summary(trials, scored, study.mode),
                         recipe_spec=None if recipe is None else recipe_spec(study.spec, recipe, study.stage),
                         confirmation=confirmation, pretraining=pretraining,
                         reuse=pretraining.reuse if pretraining is not None else pretrain_reuse(study,
                                                                                                trials))
