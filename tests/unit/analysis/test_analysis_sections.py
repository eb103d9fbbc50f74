"""analyze -> plots -> sections -> HTML in memory, for a loss minimised by a pre-training study."""
import dataclasses

import pytest

from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis.analyze import AnalysisOptions, analyze
from thoraxmae.analysis.plots import draw_all, grid_columns
from thoraxmae.analysis.render import render_html
from thoraxmae.analysis.sections import build_sections, effects_takeaway
from thoraxmae.study import schema


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
    assert "(minimised, each trial's best epoch)" in page and page.count("<figure>") == 7


def test_effects_takeaway_and_missing_ped_anova(loss_study, tmp_path):
    a = analyze(loss_study, AnalysisOptions(n_bootstrap=3, n_bootstrap_means=100))
    take = effects_takeaway(a)
    assert take.endswith(".") and all(f"`{e.knob}`" in take for e in a.effects)
    clear = [e for e in a.effects if e.verdict("min") == "clear"]
    assert all(f"`{e.knob}` (best around {e.best.label})" in take for e in clear)
    a.importance.rows = [dataclasses.replace(r, ped_anova=float("nan")) for r in a.importance.rows]
    figures = draw_all(a, tmp_path)
    page = render_html("t", "s", build_sections(a, figures, "a: 1\n"))
    assert "PED-ANOVA could not be computed" in page and "<td>nan</td>" not in page
    assert f"MLflow run <code>{a.recipe.best.run_id}</code>" in page


def test_effects_grid_leaves_few_empty_panels():
    assert [grid_columns(n) for n in (0, 1, 2, 3, 4, 5, 6, 7)] == [1, 1, 2, 3, 2, 3, 3, 3]


def test_summary_names_the_top_knob_with_a_caveat_when_unstable(loss_study, tmp_path):
    a = analyze(loss_study, AnalysisOptions(n_bootstrap=3, n_bootstrap_means=100))
    first = a.importance.statements[0]
    a.importance.statements[0] = dataclasses.replace(first, support=0.6, stable=False)
    figures = {name: tmp_path / f"{name}.png" for name in ("importance", "effects", "interaction", "history",
                                                          # not drawn: not read
                                                          "parallel", "curves", "cost")}
    summary = build_sections(a, figures, "a: 1\n")[0].blocks[2].items[1]  # blocks[0]: the verdict
    assert summary.startswith(f"Most important knob: `{first.higher}`")
    assert f"not told apart from `{first.lower}`: the order holds in only 60%" in summary
