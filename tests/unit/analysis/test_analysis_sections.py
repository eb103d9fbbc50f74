"""analyze -> plots -> sections -> HTML in memory, for a loss minimised by a pre-training study."""
import dataclasses

import pytest

from analysis.analyze import AnalysisOptions, analyze
from analysis.plots import draw_all
from analysis.render import render_html
from analysis.sections import build_sections
from study import schema
from tests.unit.analysis import synthetic as syn


@pytest.fixture(scope="module")
def loss_study():
    """The planted study read as a loss (1 - val/mauc) that the study minimised."""
    record = syn.study_record(syn.simulate_trials(24, seed=3))
    trials = []
    for t in record.trials:
        curve = [(e, 1 - v) for e, v in t.history[schema.M_VAL_MAUC]]
        trials.append(dataclasses.replace(t, history={schema.M_PRETRAIN_LOSS: curve}))
    return dataclasses.replace(record, metric=schema.M_PRETRAIN_LOSS, mode="min", trials=trials)


def test_min_mode_study_renders_every_figure(loss_study, tmp_path):
    a = analyze(loss_study, AnalysisOptions(n_bootstrap=3, n_bootstrap_means=100))
    assert a.recipe.best.objective == pytest.approx(a.scored["objective"].min())
    assert abs(a.recipe.values()["finetune.layer_decay"] - syn.OPTIMUM["finetune.layer_decay"]) < 0.1
    front = a.cost.points[a.cost.points["on_front"]]
    assert front["objective"].is_monotonic_decreasing  # cheaper -> worse loss along the front
    figures = draw_all(a, tmp_path)
    assert all(p.stat().st_size > 10_000 for p in figures.values()) and len(figures) == 7
    page = render_html("t", "s", build_sections(a, figures, "a: 1\n"))
    assert f"Best trial <code>{a.recipe.best.trial_id}</code>" in page
    assert "(minimised)" in page and page.count("<figure>") == 7
