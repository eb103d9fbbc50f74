"""Confirmation points (study/run/confirm.py): the chosen recipes and the reference, each with the same seeds;
a recipe equal to the reference runs once, as the reference, tagged with the trial it came from."""
from __future__ import annotations

from collections import Counter

import pytest

from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.run.confirm import SEED_BASE, ConfirmRecipe, confirm_points
from thoraxmae.study.spec.load import parse_spec
from thoraxmae.study.spec.plan import CONFIRM_RECIPE, CONFIRM_SEED, CONFIRM_SOURCE

PAPER = {"finetune.layer_decay": 0.55, "finetune.randaug_magnitude": 6}


@pytest.fixture()
def spec():
    return parse_spec({
        "name": "unit", "stage": "finetune", "data": {"store": "store"},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
        "finetune": {"epochs": 4, "warmup_epochs": 2},
        "search": {"num_samples": 4, "space": {
            "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 0.9},
            "finetune.randaug_magnitude": {"type": "int", "low": 0, "high": 9, "step": 3}}}})


def test_each_recipe_and_the_reference_get_the_same_seeds(spec):
    recipes = [ConfirmRecipe(schema.RECIPE_MEDIAN, None,
                             {"finetune.layer_decay": 0.7, "finetune.randaug_magnitude": 9}),
               ConfirmRecipe("trial-3", "run-3",
                             {"finetune.layer_decay": 0.8, "finetune.randaug_magnitude": 3})]
    points = confirm_points(spec, recipes, seeds=3, reference=None)
    assert [(p[CONFIRM_RECIPE], p[CONFIRM_SEED]) for p in points] == [
        (label, SEED_BASE + i) for label in (schema.RECIPE_MEDIAN, "trial-3", schema.RECIPE_REFERENCE)
        for i in range(3)]
    assert {p[CONFIRM_RECIPE]: p[CONFIRM_SOURCE] for p in points} == {
        schema.RECIPE_MEDIAN: "", "trial-3": "run-3", schema.RECIPE_REFERENCE: ""}
    reference = next(p for p in points if p[CONFIRM_RECIPE] == schema.RECIPE_REFERENCE)
    assert {k: reference[k] for k in PAPER} == PAPER  # the paper's values (docs/paper.md)


def test_a_recipe_equal_to_the_reference_runs_once_as_the_reference(spec):
    # the first recipe is the paper point, evaluated first by the search
    recipes = [ConfirmRecipe("trial-0", "run-0", dict(PAPER)),
               ConfirmRecipe(schema.RECIPE_MEDIAN, None,
                             {"finetune.layer_decay": 0.55, "finetune.randaug_magnitude": 6.0}),
               ConfirmRecipe("trial-5", "run-5",
                             {"finetune.layer_decay": 0.6, "finetune.randaug_magnitude": 6})]
    points = confirm_points(spec, recipes, seeds=2, reference=None)
    assert Counter(p[CONFIRM_RECIPE] for p in points) == {"trial-5": 2, schema.RECIPE_REFERENCE: 2}
    assert {p[CONFIRM_SOURCE] for p in points if p[CONFIRM_RECIPE] == schema.RECIPE_REFERENCE} == {"run-0"}


def test_a_recipe_outside_the_space_or_missing_a_knob_is_refused(spec):
    with pytest.raises(SpecError,
                       match=r"`median` sets finetune.layer_decay=0.95, outside the study's space"):
        confirm_points(spec,
                       [ConfirmRecipe(schema.RECIPE_MEDIAN, None, {**PAPER, "finetune.layer_decay": 0.95})],
                       seeds=2, reference=None)
    with pytest.raises(SpecError,
                       match="`trial-1` has no value for the searched knob finetune.randaug_magnitude"):
        confirm_points(spec, [ConfirmRecipe("trial-1", "r", {"finetune.layer_decay": 0.5})], seeds=2,
                       reference=None)
    with pytest.raises(SpecError, match="no scored trial to confirm"):
        confirm_points(spec, [], seeds=2, reference=None)
    with pytest.raises(SpecError, match="need at least 1 recipe and 2 seeds"):
        confirm_points(spec, [ConfirmRecipe("trial-1", "r", PAPER)], seeds=1, reference=None)
