"""The demo's spec (configs/demo.yaml through thoraxmae.demo.demo_spec): coverage of its 4 pre-training
recipes, the confirmation of the chosen recipes vs the paper's, and how --trials / --confirm-seeds adjust
them."""
from __future__ import annotations

from thoraxmae.demo import DEMO_SPEC, demo_spec
from thoraxmae.study.spec.coverage import combinations, study_points


def test_the_demo_covers_every_pretraining_recipe_and_confirms(phantom_store, tmp_path):
    spec = demo_spec(DEMO_SPEC, tmp_path, phantom_store, trials=None)
    assert spec.stage == "pipeline" and spec.search.reuse_pretraining and spec.search.num_samples == 10
    assert len(combinations(spec)) == 4 and spec.search.coverage == 2
    recipes = [(p["pretrain.mask_ratio"], p["pretrain.crop_min"]) for p in study_points(spec)]
    assert len(recipes) == 8 and len(set(recipes[:4])) == 4  # the paper's point first, then round-robin
    assert spec.confirm is not None and (spec.confirm.top, spec.confirm.seeds) == (3, 2)


def test_fewer_trials_lower_the_coverage_and_confirmation_can_be_off(phantom_store, tmp_path):
    spec = demo_spec(DEMO_SPEC, tmp_path, phantom_store, trials=2, confirm_seeds=0)
    assert spec.search.num_samples == 2 and spec.search.coverage == 0 and spec.confirm is None
    spec = demo_spec(DEMO_SPEC, tmp_path / "b", phantom_store, trials=5, confirm_seeds=3)
    assert spec.search.coverage == 1 and spec.confirm.seeds == 3
