"""Confirmation runs: read back from a real SQLite MLflow, scored per seed, compared with the reference
recipe seed by seed; a planted lucky winner is not distinguishable, a planted real winner is better."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis.analyze import AnalysisOptions, analyze
from thoraxmae.analysis.claims import headline, noise_note, order_text, verdict_text
from thoraxmae.analysis.confirm import NOISE_FACTOR, summarize_confirmation
from thoraxmae.analysis.load import ConfirmRecord, load_study
from thoraxmae.analysis.report import build_report
from thoraxmae.study import schema

SEEDS = [0, 1, 2, 3, 4]
REFERENCE_MEAN = 0.76
TRUE_MEANS = {"lucky": REFERENCE_MEAN, "real": REFERENCE_MEAN + 0.03, schema.RECIPE_REFERENCE: REFERENCE_MEAN}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A 24-trial study; its best search trial is only lucky (true mean = the reference's), another
    completed trial is really better (+0.03); each recipe re-run with seeds 0-4, one run failed."""
    root = tmp_path_factory.mktemp("confirm")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    study = syn.write_study(uri, "confirmed", syn.simulate_trials(24, seed=0), root / "artifacts")
    done = sorted((t for t in study.trials if t.status == schema.STATUS_COMPLETED), key=lambda t: -max(t.curve))
    lucky, real = done[0], done[-1]
    labels = {"lucky": f"trial-{lucky.trial_id}", "real": f"trial-{real.trial_id}",
              schema.RECIPE_REFERENCE: schema.RECIPE_REFERENCE}
    sources = {"lucky": lucky, "real": real, schema.RECIPE_REFERENCE: None}
    reference_params = {k: schema.PAPER_RECIPE.get(k, 6) for k in syn.SPACE}
    scores = syn.planted_scores(TRUE_MEANS, SEEDS, rng_seed=0)
    for key, by_seed in scores.items():
        trial = sources[key]
        for seed, score in by_seed.items():
            syn.write_confirm_run(study, labels[key], seed, score, trial.params if trial else reference_params,
                                  source_trial=trial.trial_id if trial else None)
    syn.write_confirm_run(study, labels["lucky"], 5, 0.0, lucky.params, status=schema.STATUS_FAILED,
                          source_trial=lucky.trial_id)
    return {"uri": uri, "root": root, "labels": labels, "scores": scores, "lucky": lucky, "real": real}


@pytest.fixture(scope="module")
def analysis(planted):
    return analyze(load_study("confirmed", planted["uri"]), AnalysisOptions(n_bootstrap=4, n_bootstrap_means=100))


def _t_ci(x: np.ndarray) -> tuple[float, float]:
    return tuple(stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x)))


def test_runs_are_read_back_with_recipe_source_seed_and_status(planted):
    study = load_study("confirmed", planted["uri"])
    assert len(study.confirm) == 3 * len(SEEDS) + 1
    assert len(study.trials) == 24  # confirmation runs are not trials
    failed = [r for r in study.confirm if r.status == schema.STATUS_FAILED]
    assert [(r.recipe, r.seed, r.error) for r in failed] == [
        (planted["labels"]["lucky"], 5, "RuntimeError: simulated confirmation crash")]
    ref = [r for r in study.confirm if r.recipe == schema.RECIPE_REFERENCE]
    assert {r.seed for r in ref} == set(SEEDS) and all(r.source_run is None for r in ref)
    lucky = next(r for r in study.confirm if r.recipe == planted["labels"]["lucky"])
    assert lucky.source_run == next(t.run_id for t in study.trials if t.trial_id == planted["lucky"].trial_id)


def test_score_is_the_best_epoch_not_the_last(analysis, planted):
    ref = analysis.confirmation.reference
    assert ref.scores == pytest.approx(planted["scores"][schema.RECIPE_REFERENCE])  # epoch 3, not epoch 4
    assert ref.test_mean == pytest.approx(np.mean(list(planted["scores"][schema.RECIPE_REFERENCE].values())) - 0.01)


def test_lucky_winner_is_not_distinguishable_and_real_winner_is_better(analysis, planted):
    c = analysis.confirmation
    labels, scores = planted["labels"], planted["scores"]
    assert [r.label for r in c.recipes] == [schema.RECIPE_REFERENCE, labels["real"], labels["lucky"]]
    lucky = next(r for r in c.recipes if r.label == labels["lucky"])
    real = next(r for r in c.recipes if r.label == labels["real"])
    assert lucky.trial_id == planted["lucky"].trial_id
    assert lucky.search_score == pytest.approx(max(planted["lucky"].curve))  # the best search score of all
    assert lucky.search_score > real.search_score
    for key, r in (("lucky", lucky), ("real", real)):
        x = np.array([scores[key][s] for s in SEEDS])
        d = x - np.array([scores[schema.RECIPE_REFERENCE][s] for s in SEEDS])
        assert r.mean == pytest.approx(x.mean()) and r.ci == pytest.approx(_t_ci(x))
        assert r.paired.n == 5 and r.paired.mean == pytest.approx(d.mean()) and r.paired.ci == pytest.approx(_t_ci(d))
    assert lucky.paired.verdict == "indistinguishable" and real.paired.verdict == "better"
    lo, hi = real.paired.ci
    assert verdict_text(real.paired) == f"better than the reference recipe by {real.paired.mean:+.4f} " \
                                        f"(95% CI {lo:+.4f} to {hi:+.4f})"
    lo, hi = lucky.paired.ci
    assert verdict_text(lucky.paired) == ("not distinguishable from the reference recipe (difference "
                                          f"{lucky.paired.mean:+.4f}, 95% CI {lo:+.4f} to {hi:+.4f})")


def test_noise_floor_is_the_pooled_seed_sd(analysis, planted):
    c = analysis.confirmation
    variances = [np.var(list(v.values()), ddof=1) for v in planted["scores"].values()]
    assert c.noise_sd == pytest.approx(math.sqrt(np.mean(variances))) and c.noise_dof == 12
    assert 0.002 < c.noise_sd < 0.01  # planted: ~0.005
    assert c.notes == [(f"left out 1 confirmation run(s) that failed: `{planted['labels']['lucky']}` seed 5 "
                        f"(RuntimeError: simulated confirmation crash)")]


def test_importance_is_checked_against_the_noise_floor(analysis):
    c = analysis.confirmation
    effects = {e.knob: e for e in analysis.effects}
    assert c.within_noise(effects[syn.MOST_IMPORTANT].effect_range) is False  # planted 0.1-deep bowl
    assert c.within_noise(NOISE_FACTOR * c.noise_sd * 0.99) is True
    assert c.within_noise(NOISE_FACTOR * c.noise_sd * 1.01) is False


def test_orders_are_checked_against_the_noise_floor(analysis):
    effects = {e.knob: e for e in analysis.effects}
    irrelevant = effects[syn.IRRELEVANT].effect_range
    limit = NOISE_FACTOR * analysis.confirmation.noise_sd
    assert irrelevant < limit  # the planted no-effect knob moves the objective less than seed noise
    assert noise_note(analysis, syn.IRRELEVANT) == (f"effect range {irrelevant:.4f} < 2 × noise floor = "
                                                    f"{limit:.4f}: within seed noise")
    last = analysis.importance.statements[-1]
    assert last.lower == syn.IRRELEVANT
    assert order_text(analysis, last) == (f"{last.text()}; `{syn.IRRELEVANT}`: "
                                          f"{noise_note(analysis, syn.IRRELEVANT)}")
    noisy = dataclasses.replace(analysis, confirmation=dataclasses.replace(analysis.confirmation, noise_sd=1.0))
    first = dataclasses.replace(analysis.importance.statements[0], support=0.9, stable=True)
    assert order_text(noisy, first) == (f"`{first.higher}` ranks above `{first.lower}` in 90% of resamples, but "
                                        f"{noise_note(noisy, first.higher)}: not a finding")
    assert noise_note(noisy, first.higher).endswith("< 2 × noise floor = 2.0000: within seed noise")


def test_report_rests_on_the_confirmation(planted, tmp_path):
    result = build_report("confirmed", planted["uri"], tmp_path, n_bootstrap=4, log_artifacts=False)
    real = next(r for r in result.analysis.confirmation.recipes if r.label == planted["labels"]["real"])
    for text in (result.html.read_text(), result.markdown.read_text()):
        assert "Exploratory recipe" not in text and "Recipe (exploratory)" not in text
        assert "This recipe rests on 16 confirmation runs" in text
        assert verdict_text(real.paired) in text
        assert "not distinguishable from the reference recipe" in text
        assert "Seed-to-seed spread (the study's noise floor): SD" in text
        assert "Checked against the noise floor (seed SD" in text
        assert "exceeds the noise" not in text and "other trials' mean" not in text
    md = result.markdown.read_text()
    assert f"- Confirmed recipe `{real.label}` (5 seed(s), mean {real.mean:.4f}): {verdict_text(real.paired)}." in md
    assert "## Recipe\n" in md


def _run(recipe: str, seed: int | None, value: float, status: str = schema.STATUS_COMPLETED,
         start: float = 0.0, metric: str = schema.M_PRETRAIN_LOSS) -> ConfirmRecord:
    history = {metric: [(1, value + 0.1), (2, value), (3, value + 0.05)]} if status == schema.STATUS_COMPLETED else {}
    return ConfirmRecord(f"r-{recipe}-{seed}-{start}", recipe, None, seed, status, start, {}, {}, history)


def _summary(runs, mode="min", metric=schema.M_PRETRAIN_LOSS):
    no_trials = pd.DataFrame(columns=["trial_id", "run_id", "objective"])
    return summarize_confirmation(runs, no_trials, (), metric, mode)


def test_min_mode_lower_is_better_and_scored_at_the_lowest_epoch():
    ref = [_run("reference", s, 0.50 + 0.001 * s) for s in range(3)]
    better = [_run("trial-a", s, 0.40 + 0.002 * s) for s in range(3)]
    c = _summary(ref + better)
    a = c.candidates[0]
    assert a.scores == pytest.approx({0: 0.40, 1: 0.402, 2: 0.404})  # epoch 2, the lowest
    assert a.paired.verdict == "better" and a.paired.mean == pytest.approx(-0.099)
    assert verdict_text(a.paired).startswith("better than the reference recipe by -0.0990 (95% CI -0.")
    assert c.test_metric is None  # a pre-training loss has no test split


def test_degenerate_confirmations_say_what_could_not_be_computed():
    runs = [_run("reference", 0, 0.5), _run("trial-a", 0, 0.4), _run("trial-b", 1, 0.45),
            _run("trial-a", 0, 0.3, start=5.0),  # a repeated seed: the later run is used
            _run("trial-c", None, 0.4), _run("trial-c", 2, 0.4, status=schema.STATUS_RUNNING)]
    c = _summary(runs)
    a, b = (next(r for r in c.recipes if r.label == k) for k in ("trial-a", "trial-b"))
    assert a.scores == {0: 0.3} and math.isnan(a.ci[0]) and math.isnan(a.sd)
    assert verdict_text(a.paired) == ("not compared: only 1 seed in common with the reference recipe "
                                      "(difference -0.2000); an interval needs 2")
    assert verdict_text(b.paired) == "not compared: no seed in common with the reference recipe"
    assert math.isnan(c.noise_sd) and c.within_noise(0.1) is None
    assert c.notes == [
        "left out 1 confirmation run(s) that are running: `trial-c` seed 2",
        "left out 1 confirmation run(s) that lack an integer `seed` param: `trial-c` seed ?",
        "1 repeated run(s) of the same recipe and seed: the latest of each is used",
        "no recipe has 2 completed seeds: the seed-to-seed spread (noise floor) cannot be measured"]


def test_without_reference_runs_nothing_is_compared():
    c = _summary([_run("trial-a", s, 0.4 + 0.01 * s) for s in range(3)])
    assert c.reference is None and c.candidates[0].paired is None
    assert verdict_text(None) == "not compared: no completed run of the reference recipe"
    assert c.notes == ["no completed run of the `reference` recipe: no paired comparison"]
    assert c.noise_sd == pytest.approx(0.01)


def test_headline_without_confirmation_says_exploratory():
    a = analyze(syn.study_record(syn.simulate_trials(8, seed=1)), AnalysisOptions(n_bootstrap=2, n_bootstrap_means=50))
    assert a.confirmation is None
    assert headline(a) == [("Recipe status: **exploratory** (no confirmation runs: search scores only, one seed per "
                            "trial).")]
