"""Coverage of pre-training recipes (pipeline) and encoders (finetune.init) before the sampler exploits."""
from __future__ import annotations

from collections import Counter

import pytest
import yaml

from tests.conftest import write_store_manifest
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.coverage import combinations, coverage_points, study_points
from thoraxmae.study.spec.load import load_spec


def _pipeline(**search) -> dict:
    return {
        "name": "cov", "stage": "pipeline", "data": {"store": "store"},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
        "pretrain": {"epochs": 2, "warmup_epochs": 1}, "finetune": {"epochs": 3, "warmup_epochs": 1},
        "search": {"num_samples": 10, "points_to_evaluate": ["paper"], "space": {
            "pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]},
            "pretrain.crop_min": {"type": "categorical", "choices": [0.2, 0.5]},
            "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 0.9},
            "finetune.randaug_magnitude": {"type": "int", "low": 0, "high": 9, "step": 3}}, **search},
    }


@pytest.fixture()
def load(tmp_path):
    write_store_manifest(tmp_path / "store")

    def _load(d: dict):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(d))
        return load_spec(path)

    return _load


def _recipe(point: dict) -> tuple:
    return point["pretrain.mask_ratio"], point["pretrain.crop_min"]


def test_every_pretraining_recipe_is_covered_k_times_round_robin(load):
    spec = load(_pipeline(coverage=2))
    points = study_points(spec)
    # the paper's point (0.9, 0.5) counts toward its recipe: 1 + 7 enqueued = 2 x 4 recipes
    assert len(points) == 8
    assert Counter(_recipe(p) for p in points) == {(0.75, 0.2): 2, (0.75, 0.5): 2, (0.9, 0.2): 2,
                                                   (0.9, 0.5): 2}
    # the first round starts four different pre-trainings before any recipe repeats
    assert len({_recipe(p) for p in points[:4]}) == 4
    for p in points[1:]:
        assert 0.4 <= p["finetune.layer_decay"] <= 0.9 and p["finetune.randaug_magnitude"] in (0, 3, 6, 9)
    assert study_points(spec) == points  # seeded: the same points on every load (resume re-reads the spec)


def test_coverage_zero_turns_it_off(load):
    assert len(study_points(load(_pipeline(coverage=0)))) == 1


def test_continuous_pretraining_knob_is_a_spec_error_naming_the_fix(load):
    d = _pipeline()
    d["search"]["space"]["pretrain.blr"] = {"type": "float", "low": 1e-4, "high": 5e-4, "log": True}
    with pytest.raises(SpecError, match=r"search\.space\.pretrain\.blr: a pipeline study covers every value "
                                        r".*"
                                        r"categorical.*search\.coverage: 0"):
        load(d)


def test_float_with_step_is_discretised(load):
    d = _pipeline(num_samples=12, points_to_evaluate=[])
    d["search"]["space"]["pretrain.mask_ratio"] = {"type": "float", "low": 0.75, "high": 0.85, "step": 0.05}
    spec = load(d)
    assert sorted({c["pretrain.mask_ratio"] for c in combinations(spec)}) == [0.75, 0.8, 0.85]


def test_too_few_samples_for_the_coverage_names_both_numbers(load):
    with pytest.raises(SpecError, match=r"search\.num_samples=6 is below 4 combinations .* x "
                                        r"search\.coverage=2 = 8"):
        load(_pipeline(num_samples=6))


def test_given_points_count_toward_coverage(load):
    spec = load(_pipeline(coverage=1, points_to_evaluate=[
        "paper", {"pretrain.mask_ratio": 0.75, "pretrain.crop_min": 0.2}]))
    extra = coverage_points(spec, study_points(spec)[:2])
    assert sorted(_recipe(p) for p in extra) == [(0.75, 0.5), (0.9, 0.2)]
