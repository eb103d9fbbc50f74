"""Confirmation runs: read back from a real SQLite MLflow, scored per seed, the recommended recipe picked on
val and every recipe judged against the reference on the held-out test split, paired by seed, with Holm's
correction across the recipes; a planted lucky winner is not distinguishable, a planted real winner is better,
and a candidate equal to the reference is reported as the reference."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis.analyze import AnalysisOptions, analyze
from thoraxmae.analysis.claims import headline, noise_note, order_text
from thoraxmae.analysis.confirm import NOISE_FACTOR, holm, summarize_confirmation
from thoraxmae.analysis.confirm_section import (
    confirmation_blocks,
    variance_parts,
    varied_text,
    verdict_text,
)
from thoraxmae.analysis.load import ConfirmRecord, load_study
from thoraxmae.analysis.report import build_report
from thoraxmae.study import schema

SEEDS = [0, 1, 2, 3, 4]
REFERENCE_MEAN = 0.76
TRUE_MEANS = {"lucky": REFERENCE_MEAN, "real": REFERENCE_MEAN + 0.03, schema.RECIPE_REFERENCE: REFERENCE_MEAN}
TRUE_TEST = {"lucky": REFERENCE_MEAN - 0.01, "real": REFERENCE_MEAN + 0.02,
             schema.RECIPE_REFERENCE: REFERENCE_MEAN - 0.01}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A 24-trial study; its best search trial is only lucky (true mean = the reference's), another
    completed trial is really better (+0.03); each recipe re-run with seeds 0-4, one run failed."""
    root = tmp_path_factory.mktemp("confirm")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    study = syn.write_study(uri, "confirmed", syn.simulate_trials(24, seed=0), root / "artifacts")
    done = sorted((t for t in study.trials if t.status == schema.STATUS_COMPLETED),
                  key=lambda t: -max(t.curve))
    lucky, real = done[0], done[-1]
    labels = {"lucky": f"trial-{lucky.trial_id}", "real": f"trial-{real.trial_id}",
              schema.RECIPE_REFERENCE: schema.RECIPE_REFERENCE}
    sources = {"lucky": lucky, "real": real, schema.RECIPE_REFERENCE: None}
    reference_params = {k: schema.PAPER_RECIPE.get(k, 6) for k in syn.SPACE}
    scores = syn.planted_scores(TRUE_MEANS, SEEDS, rng_seed=0)
    tests = syn.planted_scores(TRUE_TEST, SEEDS, rng_seed=1)  # the held-out split: its own per-seed noise
    for key, by_seed in scores.items():
        trial = sources[key]
        for seed, score in by_seed.items():
            syn.write_confirm_run(study, labels[key], seed, score,
                                  trial.params if trial else reference_params,
                                  source_trial=trial.trial_id if trial else None, test_score=tests[key][seed])
    syn.write_confirm_run(study, labels["lucky"], 5, 0.0, lucky.params, status=schema.STATUS_FAILED,
                          source_trial=lucky.trial_id)
    return {"uri": uri, "root": root, "labels": labels, "scores": scores, "tests": tests, "lucky": lucky,
            "real": real}


@pytest.fixture(scope="module")
def analysis(planted):
    return analyze(load_study("confirmed", planted["uri"]),
                   AnalysisOptions(n_bootstrap=4, n_bootstrap_means=100))


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


def _by_seed(values: dict) -> dict[int, float]:
    return {seed: v for (pretrain, seed), v in values.items() if pretrain is None}


def test_score_is_the_best_epoch_not_the_last(analysis, planted):
    ref = analysis.confirmation.reference
    assert _by_seed(ref.scores) == pytest.approx(planted["scores"][schema.RECIPE_REFERENCE])  # epoch 3, not 4
    assert _by_seed(ref.test) == pytest.approx(planted["tests"][schema.RECIPE_REFERENCE])
    assert ref.seeds == SEEDS and ref.pretrain_seeds == []


def test_verdict_is_test_split_paired_by_seed_with_holm(analysis, planted):
    c = analysis.confirmation
    labels, scores, tests = planted["labels"], planted["scores"], planted["tests"]
    assert [r.label for r in c.recipes] == [schema.RECIPE_REFERENCE, labels["real"], labels["lucky"]]
    assert c.verdict_metric == "test/mauc" and c.held_out and c.recommended == labels["real"]  # chosen on val
    lucky = next(r for r in c.recipes if r.label == labels["lucky"])
    real = next(r for r in c.recipes if r.label == labels["real"])
    assert lucky.trial_id == planted["lucky"].trial_id
    assert lucky.search_score == pytest.approx(max(planted["lucky"].curve))  # the best search score of all
    assert lucky.search_score > real.search_score
    ref_val = np.array([scores[schema.RECIPE_REFERENCE][s] for s in SEEDS])
    ref_test = np.array([tests[schema.RECIPE_REFERENCE][s] for s in SEEDS])
    p_raw = {}
    for key, r in (("lucky", lucky), ("real", real)):
        x = np.array([scores[key][s] for s in SEEDS])
        assert r.mean == pytest.approx(x.mean()) and r.ci == pytest.approx(_t_ci(x))
        assert r.paired_val.mean == pytest.approx((x - ref_val).mean())  # val: the secondary column
        t = np.array([tests[key][s] for s in SEEDS])
        d = t - ref_test  # the verdict: held-out test, seed by seed
        assert (r.paired.n == 5 and r.paired.mean == pytest.approx(d.mean())
                and r.paired.ci == pytest.approx(_t_ci(d)))
        assert r.paired.p == pytest.approx(stats.ttest_rel(t, ref_test).pvalue)
        p_raw[key] = r.paired.p
    low, high = sorted(p_raw.values())  # Holm over k = 2: the smaller p x 2, the larger x 1 (kept monotone)
    assert sorted([real.paired.p_holm, lucky.paired.p_holm]) == pytest.approx([min(1, 2 * low),
                                                                              max(min(1, 2 * low), high)])
    assert lucky.paired.verdict == "indistinguishable" and real.paired.verdict == "better"
    lo, hi = real.paired.ci
    assert verdict_text(real, c) == (f"better than the reference recipe on `test/mauc` by "
                                     f"{real.paired.mean:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}, paired p "
                                     f"{real.paired.p:.3g}, Holm-adjusted p {real.paired.p_holm:.3g} across "
                                     f"2 recipes)")
    assert verdict_text(lucky, c).startswith("not distinguishable from the reference recipe on `test/mauc` "
                                             f"(difference {lucky.paired.mean:+.4f}, 95% CI")
    assert varied_text(c) == "5 fine-tuning seeds, one pre-training per recipe"  # a pipeline study
    assert headline(analysis)[0] == (f"**Verdict: the recommended recipe `{real.label}` is "
                                     f"{verdict_text(real, c)}.** "
                                     "It has the best mean `val/mauc` over 5 fine-tuning seeds, one "
                                     "pre-training per recipe; held-out `test/mauc` only judges it.")


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002]) and holm([]) == []


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
    noisy = dataclasses.replace(analysis,
                                confirmation=dataclasses.replace(analysis.confirmation, noise_sd=1.0))
    first = dataclasses.replace(analysis.importance.statements[0], support=0.9, stable=True)
    assert order_text(noisy, first) == (f"`{first.higher}` ranks above `{first.lower}` in 90% of resamples, "
                                        "but "
                                        f"{noise_note(noisy, first.higher)}: not a finding")
    assert noise_note(noisy, first.higher).endswith("< 2 × noise floor = 2.0000: within seed noise")


def test_report_rests_on_the_confirmation(planted, tmp_path):
    result = build_report("confirmed", planted["uri"], tmp_path, n_bootstrap=4, log_artifacts=False)
    real = next(r for r in result.analysis.confirmation.recipes if r.label == planted["labels"]["real"])
    for text in (result.html.read_text(), result.markdown.read_text()):
        assert "Exploratory recipe" not in text and "Recipe (exploratory)" not in text
        assert "This recipe rests on 16 confirmation runs" in text
        assert "not distinguishable from the reference recipe" in text
        assert "Seed-to-seed spread (the study's noise floor): SD" in text
        assert "Checked against the noise floor (seed SD" in text
        assert "exceeds the noise" not in text and "other trials' mean" not in text
    md = result.markdown.read_text()
    assert verdict_text(real, result.analysis.confirmation) in md
    summary = md[md.index("## Summary"):]
    # verdict first
    assert summary.index("**Verdict: the recommended recipe") < summary.index("Study **confirmed**")
    assert "## Recipe\n" in md


def _run(recipe: str, seed: int | None, value: float, status: str = schema.STATUS_COMPLETED,
         start: float = 0.0, metric: str = schema.M_PRETRAIN_LOSS, test: float | None = None,
         params: dict | None = None, source: str | None = None) -> ConfirmRecord:
    history = ({metric: [(1, value + 0.1), (2, value), (3, value + 0.05)]}
               if status == schema.STATUS_COMPLETED else {})
    metrics = {} if test is None else {schema.M_TEST_MAUC: test}
    params = {k: str(v) for k, v in (params or {}).items()}
    return ConfirmRecord(f"r-{recipe}-{seed}-{start}-{params}", recipe, source, seed, status, start, params,
                         metrics, history)


def _summary(runs, mode="min", metric=schema.M_PRETRAIN_LOSS, knobs=(), stage="finetune", trials=None):
    trials = pd.DataFrame(columns=["trial_id", "run_id", "objective"]) if trials is None else trials
    return summarize_confirmation(runs, trials, knobs, metric, mode, stage)


def test_min_mode_lower_is_better_and_without_test_split_the_verdict_says_so():
    ref = [_run("reference", s, 0.50 + 0.001 * s) for s in range(3)]
    better = [_run("trial-a", s, 0.40 + 0.002 * s) for s in range(3)]
    c = _summary(ref + better)
    a = c.candidates[0]
    # epoch 2, the lowest
    assert a.scores == pytest.approx({(None, 0): 0.40, (None, 1): 0.402, (None, 2): 0.404})
    assert a.paired.verdict == "better" and a.paired.mean == pytest.approx(-0.099)
    assert a.paired.p_holm == pytest.approx(a.paired.p)  # a family of one
    assert verdict_text(a, c).startswith("better than the reference recipe on `pretrain/loss` by -0.0990 "
                                         "(95% CI -0.")
    assert c.test_metric is None and not c.held_out  # a pre-training loss has no test split
    assert c.notes == [("`pretrain/loss` has no test split: the verdicts use `pretrain/loss`, the split the "
                        "recipes were chosen on (not held out)")]


VAL, TEST = schema.M_VAL_MAUC, schema.M_TEST_MAUC
KNOBS = ("finetune.layer_decay",)


def _recipe(label, val, test, layer_decay, seeds=(1000, 1001, 1002), **kw):
    return [_run(label, s, val + 0.004 * i, metric=VAL, test=test[i], params={KNOBS[0]: layer_decay}, **kw)
            for i, s in enumerate(seeds)]


def test_val_winner_trailing_on_test_is_not_better_and_holm_counts_k_recipes():
    """The issue's demo: the recommended recipe leads on val and trails on test; the verdict is test's."""
    ref_test = [0.541, 0.546, 0.538]
    runs = [*_recipe("reference", 0.60, ref_test, 0.55),
            *_recipe("trial-a", 0.663, [0.531, 0.539, 0.529], 0.8),  # best val, lower test
            *_recipe("trial-b", 0.62, [0.571, 0.575, 0.570], 0.7),  # clearly better on test
            *_recipe("trial-c", 0.61, [0.546, 0.541, 0.548], 0.4)]
    c = _summary(runs, mode="max", metric=VAL, knobs=KNOBS)
    assert c.recommended == "trial-a" and c.verdict_metric == TEST and c.held_out
    by = {r.label: r for r in c.recipes}
    for label in ("trial-a", "trial-b", "trial-c"):
        d = np.array(list(by[label].test.values())) - np.array(ref_test)
        assert (by[label].paired.mean == pytest.approx(d.mean())
                and by[label].paired.ci == pytest.approx(_t_ci(d)))
        assert by[label].paired_val.mean == pytest.approx(by[label].mean - by["reference"].mean)
    p = [by[k].paired.p for k in ("trial-a", "trial-b", "trial-c")]
    assert [by[k].paired.p_holm for k in ("trial-a", "trial-b", "trial-c")] == pytest.approx(holm(p))
    assert len(c.compared) == 3
    assert by["trial-a"].paired.mean < 0 and by["trial-b"].paired.verdict == "better"
    unadjusted = by["trial-c"].paired.p  # Holm can only raise a p
    assert by["trial-c"].paired.p_holm >= unadjusted and by["trial-c"].paired.verdict == "indistinguishable"
    assert headline_lines(c)[0].startswith(f"**Verdict: the recommended recipe `trial-a` is "
                                           f"{by['trial-a'].paired.verdict}")


def headline_lines(c):
    from thoraxmae.analysis.confirm_section import verdict_lines

    return verdict_lines(c)


def test_candidate_equal_to_the_reference_is_reported_as_the_reference():
    ref_test = [0.54, 0.55, 0.545]
    runs = [*_recipe("reference", 0.60, ref_test, 0.55),
            *_recipe("trial-0", 0.601, [0.541, 0.549, 0.546], 0.55),  # the paper point, re-run (old studies)
            *_recipe("trial-a", 0.59, [0.52, 0.53, 0.525], 0.8)]
    c = _summary(runs, mode="max", metric=VAL, knobs=KNOBS)
    by = {r.label: r for r in c.recipes}
    assert by["trial-0"].same_as_reference and not by["trial-a"].same_as_reference
    assert c.compared == [by["trial-a"]] and math.isnan(by["trial-0"].paired.p_holm)  # out of the Holm family
    assert by["trial-a"].paired.p_holm == pytest.approx(by["trial-a"].paired.p)
    assert verdict_text(by["trial-0"], c) == ("is the reference recipe (the same knob values): not a "
                                              "separate comparison")
    assert c.recommended == "trial-0"
    assert headline_lines(c)[0].startswith("**Verdict: the reference recipe stands.**")
    # run once: the reference runs carry the trial they equal (study side), and no trial-0 runs exist
    trials = pd.DataFrame([{"trial_id": "0", "run_id": "run-0", "objective": 0.61}])
    once = [r for r in runs if r.recipe != "trial-0"]
    once = [dataclasses.replace(r, source_run="run-0") if r.recipe == "reference" else r for r in once]
    c = _summary(once, mode="max", metric=VAL, knobs=KNOBS, trials=trials)
    assert c.reference.trial_id == "0" and c.reference.search_score == pytest.approx(0.61)
    assert [r.label for r in c.candidates] == ["trial-a"] and c.recommended == schema.RECIPE_REFERENCE
    text = "\n".join(str(b) for b in confirmation_blocks(c, list(KNOBS)))
    assert "`reference` (recommended) = trial `0`" in text


def test_pretraining_seeds_pair_on_both_seeds_and_are_named():
    runs = []
    for label, val, shift in (("reference", 0.60, 0.0), ("trial-a", 0.62, 0.01)):
        for p in (0, 1):
            for s in (1000, 1001, 1002):
                runs.append(_run(label, s, val + 0.01 * p + 0.001 * s % 7, metric=VAL,
                                 test=0.55 + shift + 0.01 * p + 0.0005 * (s % 3),
                                 params={"pretrain.seed": p}))
    c = _summary(runs, mode="max", metric=VAL, stage="pipeline")
    a = c.candidates[0]
    assert a.n == 6 and a.seeds == [1000, 1001, 1002] and a.pretrain_seeds == [0, 1] and a.paired.n == 6
    assert a.paired.mean == pytest.approx(0.01)
    assert varied_text(c) == "3 fine-tuning seeds x 2 pre-training seeds per recipe"
    one = _summary([r for r in runs if r.params["pretrain.seed"] == "0"], mode="max", metric=VAL,
                   stage="pipeline")
    assert varied_text(one) == "3 fine-tuning seeds, one pre-training per recipe"
    assert "a lucky pre-training keeps its edge in every seed" in headline_lines(one)[-1]


def test_degenerate_confirmations_say_what_could_not_be_computed():
    runs = [_run("reference", 0, 0.5), _run("trial-a", 0, 0.4), _run("trial-b", 1, 0.45),
            _run("trial-a", 0, 0.3, start=5.0),  # a repeated seed: the later run is used
            _run("trial-c", None, 0.4), _run("trial-c", 2, 0.4, status=schema.STATUS_RUNNING)]
    c = _summary(runs)
    a, b = (next(r for r in c.recipes if r.label == k) for k in ("trial-a", "trial-b"))
    assert a.scores == {(None, 0): 0.3} and math.isnan(a.ci[0]) and math.isnan(a.sd)
    assert verdict_text(a, c) == ("not compared: only 1 replicate in common with the reference recipe "
                                  "(difference -0.2000 on `pretrain/loss`); an interval needs 2")
    assert verdict_text(b, c) == ("not compared: no replicate with `pretrain/loss` in common with the "
                                  "reference recipe")
    assert math.isnan(c.noise_sd) and c.within_noise(0.1) is None
    assert [n for n in c.notes if "not held out" not in n] == [
        "left out 1 confirmation run(s) that are running: `trial-c` seed 2",
        "left out 1 confirmation run(s) that lack an integer `seed` param: `trial-c` seed ?",
        "1 repeated run(s) of the same recipe and seed: the latest of each is used",
        "no recipe has 2 completed seeds: the seed-to-seed spread (noise floor) cannot be measured"]


def test_without_reference_runs_nothing_is_compared():
    c = _summary([_run("trial-a", s, 0.4 + 0.01 * s) for s in range(3)])
    assert c.reference is None and c.candidates[0].paired is None
    assert verdict_text(c.candidates[0], c) == "not compared: no completed run of the reference recipe"
    assert "no completed run of the `reference` recipe: no paired comparison" in c.notes
    assert c.noise_sd == pytest.approx(0.01)


def test_headline_without_confirmation_says_exploratory():
    a = analyze(syn.study_record(syn.simulate_trials(8, seed=1)),
                AnalysisOptions(n_bootstrap=2, n_bootstrap_means=50))
    assert a.confirmation is None
    assert headline(a) == [("Recipe status: **exploratory** (no confirmation runs: search scores only, one "
                            "seed per trial).")]


def test_variance_parts_split_pre_training_from_fine_tuning_seeds():
    """Scores = recipe + pre-training effect + fine-tuning noise, with known SDs: the one-way random-effects
    estimate recovers both (seeded; 40 pre-training seeds x 6 fine-tuning seeds per recipe)."""
    from thoraxmae.analysis.confirm import RecipeRuns

    rng = np.random.default_rng(0)
    recipes = []
    for base in (0.70, 0.72):
        scores = {}
        for p in range(40):
            effect = rng.normal(0, 0.010)
            for s in range(6):
                scores[(p, 1000 + s)] = base + effect + rng.normal(0, 0.004)
        recipes.append(RecipeRuns("r", None, math.nan, {}, scores, {}, base, (math.nan, math.nan), math.nan))
    pretrain_sd, finetune_sd = variance_parts(recipes)
    assert pretrain_sd == pytest.approx(0.010, rel=0.2) and finetune_sd == pytest.approx(0.004, rel=0.1)
    one_pretraining = [dataclasses.replace(r, scores={k: v for k, v in r.scores.items() if k[0] == 0})
                       for r in recipes]
    assert variance_parts(one_pretraining) is None  # nothing to split with one pre-training per recipe
