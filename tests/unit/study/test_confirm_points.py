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


@pytest.fixture()
def pipeline():
    return parse_spec({
        "name": "pipe", "stage": "pipeline", "data": {"store": "store"},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
        "pretrain": {"epochs": 2, "warmup_epochs": 0}, "finetune": {"epochs": 2, "warmup_epochs": 0},
        "search": {"num_samples": 2, "coverage": 1, "space": {
            "pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]}}}})


def test_pipeline_points_cross_shared_pretrain_seeds_with_shared_seeds(pipeline):
    from thoraxmae.study.spec.plan import CONFIRM_PRETRAIN_SEED, TrialPlan

    recipe = ConfirmRecipe("trial-1", "run-1", {"pretrain.mask_ratio": 0.75})
    points = confirm_points(pipeline, [recipe], seeds=2, reference=None, pretrain_seeds=2)
    # the study's own pre-training seed (0: its registered pre-trainings are reused) and one other
    assert [(p[CONFIRM_RECIPE], p[CONFIRM_PRETRAIN_SEED], p[CONFIRM_SEED]) for p in points] == [
        (label, ps, SEED_BASE + i) for label in ("trial-1", schema.RECIPE_REFERENCE) for ps in (0, SEED_BASE)
        for i in range(2)]
    plan = TrialPlan.from_config(pipeline, {"confirm": points[2]})
    assert plan.phase("pretrain").seed == SEED_BASE and plan.phase("finetune").seed == SEED_BASE
    assert plan.phase("pretrain").mask_ratio == 0.75
    one = confirm_points(pipeline, [recipe], seeds=2, reference=None)
    assert {p[CONFIRM_PRETRAIN_SEED] for p in one} == {0}


def test_pretrain_seeds_outside_a_pipeline_study_is_refused(spec):
    with pytest.raises(SpecError, match="--pretrain-seeds 2: study `unit` is stage finetune"):
        confirm_points(spec, [ConfirmRecipe("trial-1", "r", PAPER)], seeds=2, reference=None,
                       pretrain_seeds=2)
    raw = {"name": "unit", "stage": "finetune", "data": {"store": "store"},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "finetune": {"epochs": 4, "warmup_epochs": 2}, "confirm": {"pretrain_seeds": 2}}
    with pytest.raises(SpecError, match="confirm.pretrain_seeds: 2 needs stage pipeline"):
        parse_spec(raw)


def test_an_unknown_or_unsearched_knob_in_the_reference_is_an_error(spec, tmp_path):
    from thoraxmae.study.run.confirm import reference_point

    ref = tmp_path / "ref.yaml"
    ref.write_text("finetune.layer_decay: 0.6\nfinetune.nonsense: 3\n")
    with pytest.raises(SpecError, match=r"ref.yaml: `finetune.nonsense` is not a finetune knob"):
        reference_point(spec, ref)
    ref.write_text("finetune.layer_decay: 0.6\nfinetune.blr: 0.5\n")  # not searched, fixed at another value
    with pytest.raises(SpecError, match=r"finetune.blr=0.5, but study `unit` fixes it at"):
        reference_point(spec, ref)
    # a phase this study does not run
    ref.write_text("finetune.layer_decay: 0.6\npretrain.mask_ratio: 0.75\n")
    assert reference_point(spec, ref)["finetune.layer_decay"] == 0.6


def _request(spec, top_recipes, seeds):
    return confirm_points(spec, top_recipes, seeds=seeds, reference=None)


def test_a_larger_request_adds_only_the_missing_runs_and_keeps_labels(spec):
    from thoraxmae.study.run.confirm_parts import ConfirmResult, missing_points

    a = {"finetune.layer_decay": 0.7, "finetune.randaug_magnitude": 9}
    b = {"finetune.layer_decay": 0.8, "finetune.randaug_magnitude": 3}
    c = {"finetune.layer_decay": 0.75, "finetune.randaug_magnitude": 6}
    earlier = _request(spec, [ConfirmRecipe(schema.RECIPE_MEDIAN, None, a)], seeds=2)  # top 1 x 2 seeds
    # top 2 x 3 seeds: the median moved to c (another label), a is now trial-9's recipe, b is new
    request = _request(spec, [ConfirmRecipe(schema.RECIPE_MEDIAN, None, c), ConfirmRecipe("trial-9", "r9", a),
                              ConfirmRecipe("trial-3", "r3", b)], seeds=3)
    missing = missing_points(spec, request, earlier)
    assert Counter(p[CONFIRM_RECIPE] for p in missing) == {
        f"{schema.RECIPE_MEDIAN}-2": 3, schema.RECIPE_MEDIAN: 1, "trial-3": 3, schema.RECIPE_REFERENCE: 1}
    assert {p[CONFIRM_SEED] for p in missing if p[CONFIRM_RECIPE] == schema.RECIPE_MEDIAN} == {SEED_BASE + 2}
    assert missing_points(spec, earlier, earlier) == []  # the same request: nothing to run
    assert missing_points(spec, earlier[:2], earlier) == []  # a smaller one: already there
    result = ConfirmResult(request, [(p, False) for p in earlier] + [(p, p[CONFIRM_RECIPE] == "trial-3")
                                                                    for p in missing], len(missing))
    assert result.status(spec) == (len(request) - 3, 3)
    assert ConfirmResult(request, [(p, False) for p in earlier], 0).status(spec) == (4, 0)  # never more


def test_another_reference_is_refused_naming_the_confirmation_and_replace(spec, tmp_path):
    from thoraxmae.study.run.confirm_parts import missing_points

    earlier = _request(spec, [ConfirmRecipe("trial-1", "r", {**PAPER, "finetune.layer_decay": 0.7})], seeds=2)
    ref = tmp_path / "ref.yaml"
    ref.write_text("finetune.layer_decay: 0.6\n")
    other = confirm_points(spec, [ConfirmRecipe("trial-1", "r", {**PAPER, "finetune.layer_decay": 0.7})],
                           seeds=2, reference=ref)
    with pytest.raises(SpecError, match=r"study `unit`: its confirmation in .*unit-confirm has another "
                                        r"reference recipe .*`thoraxmae study confirm unit --replace"):
        missing_points(spec, other, earlier)


def test_the_request_line_says_how_many_of_the_asked_recipes_the_study_has(spec):
    from thoraxmae.cli.confirm import request_line

    recipes = [ConfirmRecipe(schema.RECIPE_MEDIAN, None, {"finetune.layer_decay": 0.7,
                                                          "finetune.randaug_magnitude": 9}),
               ConfirmRecipe("trial-3", "r3", {"finetune.layer_decay": 0.8, "finetune.randaug_magnitude": 3})]
    points = confirm_points(spec, recipes, seeds=3, reference=None)
    line = request_line("unit", 5, recipes, points, 3, 1, 0)
    assert "2 of 5 recipes asked for" in line and "median, trial-3 + reference, 3 seeds each: 9 runs" in line
    assert "of 2 recipes" not in request_line("unit", 2, recipes, points, 3, 1, 4)
    assert "earlier confirmation holds (4)" in request_line("unit", 2, recipes, points, 3, 1, 4)


def test_replace_removes_the_confirmation_runs_and_every_part(spec, tmp_path):
    from mlflow import MlflowClient

    from thoraxmae.study.run.confirm_parts import confirm_dir, remove_confirmation
    from thoraxmae.study.storage import StudyStorage

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = spec.model_copy(update={"storage_path": tmp_path / "studies",
                                   "tracking": spec.tracking.model_copy(update={"uri": uri})})
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("unit"))
    part = StudyStorage(spec.storage_path).confirm_part("unit", 2)
    part.path.mkdir(parents=True)
    (part.path / "tuner.pkl").write_bytes(b"x")
    remove_confirmation(spec, [run.info.run_id])
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert not confirm_dir(spec).exists() and part.path.parent == confirm_dir(spec).path
