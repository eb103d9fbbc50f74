"""thoraxmae.analysis.importance and analysis.effects on the planted surface (in memory, no MLflow)."""
import numpy as np
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis.effects import fit_surrogate, interaction, marginal_effects
from thoraxmae.analysis.importance import build_optuna_study, compute_importance
from thoraxmae.analysis.tables import knob_infos, scored_trials, trial_table


@pytest.fixture(scope="module")
def planted():
    record = syn.study_record(syn.simulate_trials(40, seed=0))
    trials = trial_table(record)
    scored = scored_trials(trials)
    return scored, knob_infos(trials, record.knobs, record.space)


def test_optuna_study_rebuilt_with_inferred_distributions(planted):
    scored, infos = planted
    study = build_optuna_study(scored, infos, "max")
    assert len(study.trials) == len(scored) == 38  # 40 minus the failed and the running trial
    dists = study.trials[0].distributions
    assert isinstance(dists["finetune.randaug_magnitude"], IntDistribution)
    assert (isinstance(dists["finetune.layer_decay"], FloatDistribution)
            and not dists["finetune.layer_decay"].log)
    assert study.best_value == pytest.approx(scored["objective"].max())


def test_importance_recovers_planted_order(planted):
    scored, infos = planted
    imp = compute_importance(scored, infos, "max", n_bootstrap=8, seed=0)
    assert imp.ranked and imp.n_bootstrap == 8
    assert imp.order[0] == syn.MOST_IMPORTANT
    assert imp.order[-1] == syn.IRRELEVANT
    assert imp.rows[0].fanova > 0.5 and imp.rows[-1].fanova < 0.05
    assert sum(r.fanova for r in imp.rows) == pytest.approx(1.0)
    assert imp.rows[0].fanova_low <= imp.rows[0].fanova_high
    assert len(imp.statements) == 3 and imp.statements[0].higher == syn.MOST_IMPORTANT
    assert imp.statements[0].stable == (imp.statements[0].support >= 0.8)
    wins = imp.pairwise.to_numpy()
    np.testing.assert_allclose(wins + wins.T + np.eye(4), 1.0)  # P(a > b) + P(b > a) = 1 (no ties)


def test_importance_not_ranked_with_too_few_trials(planted):
    scored, infos = planted
    imp = compute_importance(scored.head(3), infos, "max", n_bootstrap=4)
    assert not imp.ranked and "3 scored trial" in imp.reason and imp.rows == []


def test_importance_not_ranked_when_one_knob_varies(planted):
    scored, infos = planted
    fixed = scored.assign(**{k.name: scored[k.name].iloc[0] for k in infos[1:]})
    imp = compute_importance(fixed, knob_infos(fixed, tuple(i.name for i in infos), {}), "max", n_bootstrap=4)
    assert (not imp.ranked and "1 knob(s) varied across trials, at least 2" in imp.reason
            and len(imp.constant) == 3)


def test_marginal_effects_find_the_planted_optimum(planted):
    scored, infos = planted
    model, x = fit_surrogate(scored, infos, seed=0)
    effects = {e.knob: e for e in marginal_effects(scored, infos, "max", 200, 0, model, x)}
    ld = effects["finetune.layer_decay"]
    assert sum(b.n for b in ld.bins) == len(scored) and 2 <= len(ld.bins) <= 5
    assert all(b.ci_low <= b.mean <= b.ci_high for b in ld.bins if b.n > 1)
    assert abs(ld.best.center - 0.6) < 0.08
    assert ld.pd_x.shape == ld.pd_y.shape and ld.swing > effects[syn.IRRELEVANT].swing
    it = interaction(infos, ("finetune.layer_decay", "finetune.drop_path"), "max", model, x)
    assert it.z.shape == (len(it.y_values), len(it.x_values))
    assert abs(it.best_x - 0.6) < 0.08 and it.best_value == pytest.approx(it.z.max())
