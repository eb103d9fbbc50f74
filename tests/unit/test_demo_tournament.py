"""`thoraxmae demo` runs the recipe tournament of configs/demo-tournament.yaml (the pipeline search stays one
--spec away): its 4 recipes, rungs and paired scoring, with the demo's own store, tracking and storage."""
from __future__ import annotations

from thoraxmae.demo import DEMO_SPEC, TOURNAMENT_SPEC, demo_spec
from thoraxmae.study.spec.tournament_plan import planned_epochs, recipes


def test_the_demo_runs_a_four_recipe_tournament(tmp_path, phantom_store):
    spec = demo_spec(TOURNAMENT_SPEC, tmp_path, phantom_store, trials=None)
    t = spec.search.tournament
    assert t.rungs == [1, 2] and t.scoring.trials == 2 and spec.pretrain.schedule == "constant"
    assert len(recipes(spec)) == 4 and planned_epochs(4, t.rungs, t.keep) == 6
    assert (spec.tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
            and str(spec.data.store) == str(phantom_store))
    assert demo_spec(DEMO_SPEC, tmp_path, phantom_store, trials=None).search.tournament is None
