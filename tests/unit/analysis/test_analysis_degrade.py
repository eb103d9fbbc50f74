"""Degenerate studies never crash the analysis: each part that cannot be computed says what and why
in a visible line of its section, in the HTML and in the Markdown."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis.analyze import AnalysisOptions, analyze
from thoraxmae.analysis.effects import fit_surrogate, marginal_effects
from thoraxmae.analysis.plots import draw_all
from thoraxmae.analysis.render import _inline, render_html, render_markdown
from thoraxmae.analysis.sections import build_sections
from thoraxmae.analysis.tables import knob_infos
from thoraxmae.study import schema


def _report(trials, tmp_path, n_bootstrap: int = 8, errors: dict[str, str] | None = None):
    """analyze -> figures -> sections -> (analysis, figures, HTML, Markdown), all in memory."""
    record = syn.study_record(trials)
    if errors:
        record.trials = [dataclasses.replace(t, error=errors.get(t.trial_id)) for t in record.trials]
    a = analyze(record, AnalysisOptions(n_bootstrap=n_bootstrap, n_bootstrap_means=50))
    figures = draw_all(a, tmp_path)
    sections = build_sections(a, figures, "a: 1\n")
    return a, figures, render_html("t", "s", sections), render_markdown("t", "s", sections)


def _shown(line: str, html: str, md: str) -> None:
    assert line in md, line
    assert _inline(line) in html, line


def test_tied_trials_leave_resamples_out_instead_of_crashing(tmp_path):
    """The probe's crash: resamples that drew only tied trials made fANOVA raise "zero total variance"."""
    objectives = [0.70, 0.70, 0.70, 0.70, 0.75]
    a, figures, html, md = _report(syn.flat_trials(objectives), tmp_path, n_bootstrap=40)
    rng = np.random.default_rng(0)  # the resamples analysis.importance draws (seed 0)
    tied = sum(np.ptp(np.array(objectives)[rng.integers(0, 5, 5)]) == 0 for _ in range(40))
    assert tied > 0
    imp = a.importance
    assert imp.ranked and imp.n_resamples == 40 - tied and imp.n_bootstrap == 40
    _shown(f"Rank stability: {40 - tied} bootstrap resamples of the 5 scored trials; an order is stated only "
           f"when it holds in at least 80% of them ({tied} of 40 resamples drew only trials with one "
           "objective value (tied trials) and were left out).", html, md)
    assert "importance" in figures


def test_bootstrap_zero_ranks_without_stability(tmp_path):
    a, figures, html, md = _report(syn.simulate_trials(12, seed=1), tmp_path, n_bootstrap=0)
    imp = a.importance
    assert imp.ranked and imp.n_resamples == 0 and imp.statements == [] and imp.pairwise is None
    assert all(math.isnan(r.fanova_low) and math.isnan(r.p_first) for r in imp.rows)
    _shown("**Rank stability not checked**: no bootstrap resamples were asked for (--bootstrap 0); no order "
           "between knobs is stated.", html, md)
    # summary
    assert "rank stability not checked: no bootstrap resamples were asked for (--bootstrap 0)" in md
    assert "importance" in figures


def test_constant_objective_cannot_be_ranked(tmp_path):
    a, figures, html, md = _report(syn.flat_trials([0.7] * 6), tmp_path)
    reason = "the objective is 0.7 in all 6 scored trials: no variance to attribute to the knobs"
    assert not a.importance.ranked and a.importance.reason == reason
    _shown(f"**Importance cannot be ranked**: {reason}.", html, md)
    _shown(f"Importance: **cannot rank importance** ({reason}).", html, md)
    _shown(f"**No interaction plot**: importance is not ranked ({reason}).", html, md)
    assert (a.recipe.best.objective == 0.7
            and set(figures) == {"history", "effects", "parallel", "curves", "cost"})


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_trials(tmp_path, n):
    a, figures, html, md = _report(syn.flat_trials([0.70, 0.72][:n]), tmp_path)
    _shown(f"**Importance cannot be ranked**: {n} scored trial(s), at least 5 are needed.", html, md)
    _shown("No partial dependence (dashed line): the random forest needs at least 5 scored trials with "
           f"every knob's value ({n} scored here).", html, md)
    if n == 1:
        _shown("Search score of the top 1: `val/mauc` 0.7000 (one trial: no interval).", html, md)
    assert a.recipe.confidence.k == n and a.recipe.best.objective == max([0.70, 0.72][:n])
    assert "importance" not in figures and "interaction" not in figures


def test_a_knob_with_one_value(tmp_path):
    trials = syn.simulate_trials(12, seed=2)
    for t in trials:
        t.params[syn.IRRELEVANT] = 6
    a, _, html, md = _report(trials, tmp_path)
    assert a.importance.ranked and a.importance.constant == [syn.IRRELEVANT]
    assert syn.IRRELEVANT not in a.importance.order
    _shown(f"Not varied (one value in every trial): `{syn.IRRELEVANT}`.", html, md)
    _shown(f"`{syn.IRRELEVANT}`: too few distinct values to show an effect", html, md)


def test_all_trials_failed_gives_a_report_that_says_why(tmp_path):
    trials = syn.flat_trials([0.0] * 3, status=schema.STATUS_FAILED)
    errors = {"t000": 'Traceback (most recent call last):\n  File "x.py", line 3, in f\nRuntimeError: CUDA '
                      'out of memory\n',
              "t001": "ValueError: bad"}  # the tag holds the trace; the report shows its last line
    a, figures, html, md = _report(trials, tmp_path, errors=errors)
    assert a.recipe is None and a.recipe_spec is None and a.reference == []
    why = ("none of the 3 trials has a `val/mauc` value from a completed or pruned run (3 failed); first "
           "error (trial `t000`): RuntimeError: CUDA out of memory")
    _shown(f"**No recipe**: {why}.", html, md)
    assert f"## Recipe\n\n**No recipe**: {why}." in md and "Exploratory recipe" not in md
    _shown(f"**No marginal effects**: {why}.", html, md)
    _shown(f"**No comparison**: there is no recipe ({why}).", html, md)
    _shown("**No parallel coordinates figure**: no scored trial.", html, md)
    _shown("**No objective vs compute figure**: no scored trial logged its compute.", html, md)
    _shown("`t001` failed: ValueError: bad", html, md)
    assert set(figures) == {"history"} and not a.importance.ranked


def test_all_trials_pruned(tmp_path):
    trials = syn.flat_trials([0.70, 0.71, 0.69, 0.72, 0.68, 0.73], status=schema.STATUS_PRUNED)
    a, figures, html, md = _report(trials, tmp_path)
    assert a.recipe.confidence.pool == "scored" and a.recipe.best.trial_id == "t005"
    _shown("Supported by the top 3 of 6 scored trials (6 scored in all).", html, md)
    assert a.cost.n_pruned == 6 and len(figures) == 7


def test_a_missing_knob_value_leaves_the_trial_out_of_importance(tmp_path):
    trials = syn.simulate_trials(14, seed=4)
    scored = [t for t in trials if t.status in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED)]
    del scored[0].params[syn.IRRELEVANT]  # an int knob the run did not log
    a, _, html, md = _report(trials, tmp_path)
    assert a.importance.ranked and a.importance.n_incomplete == 1 and a.importance.n_trials == len(scored) - 1
    assert a.trials[syn.IRRELEVANT].dtype == "Int64" and a.trials[syn.IRRELEVANT].isna().sum() >= 1
    _shown("1 scored trial(s) without a value for every varied knob are left out of the "
           "importance.", html, md)


def test_partial_dependence_of_a_knob_most_trials_share():
    """sklearn refuses a 5-95th percentile grid that collapses; the whole range is used instead."""
    rng = np.random.default_rng(0)
    drop = np.concatenate([np.full(272, 0.1), rng.uniform(0.05, 0.09, 14), rng.uniform(0.11, 0.4, 14)])
    n = len(drop)  # 29 distinct values, but the 5th and the 95th percentile are both 0.1
    df = pd.DataFrame({"finetune.drop_path": drop, "finetune.layer_decay": rng.uniform(0.4, 1.0, n)})
    df["objective"] = 0.8 - (df["finetune.layer_decay"] - 0.6) ** 2
    infos = knob_infos(df, tuple(df.columns[:2]), {})
    model, x = fit_surrogate(df, infos, seed=0)
    effects = marginal_effects(df, infos, "max", 20, 0, model, x)
    assert effects[0].pd_x is not None and effects[0].pd_x.min() == pytest.approx(drop.min())


@pytest.mark.parametrize("case", ["running", "no metric"])
def test_nothing_scored_yet(tmp_path, case):
    if case == "running":
        trials, counts = syn.flat_trials([0.70, 0.71], status=schema.STATUS_RUNNING), "2 running"
    else:
        trials, counts = [dataclasses.replace(t, curve=[]) for t in syn.flat_trials([0.7] * 2)], "2 completed"
    a, figures, html, md = _report(trials, tmp_path)
    _shown("**No recipe**: none of the 2 trials has a `val/mauc` value from a completed or pruned run "
           f"({counts}).",
           html, md)
    assert a.recipe is None and "history" in figures and ("curves" in figures) == (case == "running")
