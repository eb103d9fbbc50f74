"""Confirmation of a study's recipes: the chosen recipes and a reference recipe, re-run with n fresh seeds
each (the same seeds for every recipe, so differences are paired by seed).

    thoraxmae study confirm NAME [--top K] [--seeds N] [--reference FILE]

or a spec's `confirm:` section, run at the end of `study run`. The caller chooses the recipes (the shell asks
analysis/candidates.py: the top-k median recipe and the configurations a model of all scored trials ranks
best, which resist the winner's curse of a raw top-1). A recipe whose knobs equal the reference's is not run
twice: it runs once, as `reference`, tagged with the trial it came from. The runs are a Tune experiment of
their own, `<storage_path>/<name>-confirm`, local or on object storage (so a killed confirmation resumes:
`thoraxmae study confirm NAME` again restores it and runs only what is missing), whose trials run the
study's own trial driver with the recipe's knobs and `finetune.seed` set to the seed. In a pipeline study the
pre-training seed is the recipe's: the registered pre-trainings are reused and only fine-tuning is repeated.
Each run is an MLflow child run of the study's parent with role `confirm`, `thoraxmae.recipe` (`trial-<id>`,
`median` or `reference`), `thoraxmae.source_run` and param `seed` (docs/mlflow-schema.md); analysis.confirm
reads them into the report's verdicts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import CONFIRM_KEY, CONFIRM_RECIPE, CONFIRM_SEED, CONFIRM_SOURCE
from thoraxmae.study.spec.space import same_point
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.callback import MlflowStudyCallback

log = logging.getLogger(__name__)
SEED_BASE = 1000  # confirmation seeds: 1000, 1001, ... (never a search trial's seed 0)


def confirm_dir(spec: StudySpec) -> Location:
    return StudyStorage(spec.storage_path).confirm(spec.name)


def reference_point(spec: StudySpec, reference: Path | None) -> dict[str, Any]:
    """The reference recipe on the study's space: the paper's values (or the file's), the spec's fixed values
    for searched knobs it does not name."""
    values = dict(schema.PAPER_RECIPE)
    if reference is not None:
        try:
            raw = yaml.safe_load(Path(reference).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise SpecError(f"--reference {reference}: cannot read it ({exc})") from None
        if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
            raise SpecError(f"--reference {reference}: expected `knob: value` lines, e.g. finetune.layer_decay: 0.75")
        values = raw
    point = {}
    for knob, dist in spec.search.space.items():
        phase, field = knob.split(".", 1)
        value = values.get(knob, getattr(spec.phase_config(phase), field))
        if not dist.contains(value) and knob in values:
            raise SpecError(f"reference {knob}={value!r} is outside the study's space {dist.model_dump(exclude_none=True)}")
        point[knob] = value
    return point


class ConfirmRecipe(NamedTuple):
    """A recipe to confirm, as the caller chose it."""

    label: str  # `trial-<id>` or `median` (schema.RECIPE_TRIAL_PREFIX, schema.RECIPE_MEDIAN)
    source_run: str | None  # MLflow run id of the search trial that ran exactly this recipe (None: none did)
    knobs: dict[str, Any]  # every searched knob's value


def recipe_knobs(spec: StudySpec, recipe: ConfirmRecipe) -> dict[str, Any]:
    """The recipe's value of every searched knob, typed by the knob's space and inside it (SpecError otherwise)."""
    out = {}
    for knob, dist in spec.search.space.items():
        if knob not in recipe.knobs or recipe.knobs[knob] is None:
            raise SpecError(f"confirm: recipe `{recipe.label}` has no value for the searched knob {knob}")
        value = parse_param(dist, str(recipe.knobs[knob]))
        if not dist.contains(value):
            raise SpecError(f"confirm: recipe `{recipe.label}` sets {knob}={value!r}, outside the study's space "
                            f"{dist.model_dump(exclude_none=True)}")
        out[knob] = value
    return out


def parse_param(dist, text: str | None) -> Any:
    """An MLflow param string back to the knob's typed value, through the knob's own space."""
    if text is None:
        raise SpecError("a completed trial run lacks a searched knob's param; its MLflow run is incomplete")
    choices = getattr(dist, "choices", None)
    if choices is not None:
        for c in choices:
            if str(c) == text:
                return c
        return text
    return int(float(text)) if dist.type == "int" else float(text)


def check_sizes(top: int, seeds: int) -> None:
    if top < 1 or seeds < 2:
        raise SpecError(f"confirm: --top {top} --seeds {seeds}: need at least 1 recipe and 2 seeds (a spread)")


def confirm_points(spec: StudySpec, recipes: list[ConfirmRecipe], seeds: int,
                   reference: Path | None) -> list[dict[str, Any]]:
    """Every (recipe, seed) configuration, recipe-major, the reference last; the seeds are shared by all
    recipes (paired). A recipe equal to the reference runs once, as the reference, tagged with its trial."""
    if not recipes:
        raise SpecError(f"study `{spec.name}`: no scored trial to confirm (all failed or unscored)")
    check_sizes(len(recipes), seeds)
    ref = reference_point(spec, reference)
    ref_source, chosen = "", []
    for recipe in recipes:
        knobs = recipe_knobs(spec, recipe)
        if same_point(knobs, ref):
            log.info("confirm: `%s` is the reference recipe; it runs once, as the reference", recipe.label)
            ref_source = ref_source or recipe.source_run or ""
        elif not any(same_point(knobs, k) for _, _, k in chosen):
            chosen.append((recipe.label, recipe.source_run or "", knobs))
    chosen.append((schema.RECIPE_REFERENCE, ref_source, ref))
    return [{**knobs, CONFIRM_RECIPE: label, CONFIRM_SOURCE: rid, CONFIRM_SEED: SEED_BASE + i}
            for label, rid, knobs in chosen for i in range(seeds)]


class ConfirmCallback(MlflowStudyCallback):
    """Confirmation runs (study/run/confirm.py): role confirm, tagged with the recipe they repeat, param seed."""

    role = schema.ROLE_CONFIRM

    def _run_id(self, trial) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            plan = self.plan(trial)
            tags = {schema.TAG_RECIPE: str(plan.recipe)}
            if plan.source_run:
                tags[schema.TAG_SOURCE_RUN] = plan.source_run
            params = {**self.params(plan), schema.PARAM_SEED: str(plan.seed), "finetune.seed": str(plan.seed)}
            run_id = self.tracker.start_trial(trial.trial_id, params, role=schema.ROLE_CONFIRM, tags=tags)
            self._runs[trial.trial_id] = run_id
            self._logged[run_id] = self.tracker.logged_steps(run_id)
        return run_id

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.tracker.end_study()  # the study's pre-training costs stay the search's


def run_confirm(spec: StudySpec, recipes: list[ConfirmRecipe], seeds: int, reference: Path | None = None,
                callbacks: list | None = None):
    """Run (or resume: then `recipes` is not read, Tune restores its own) the confirmation of a finished study;
    returns Tune's ResultGrid."""
    import ray.tune
    from ray.tune import Tuner

    from thoraxmae.study.run.experiment import can_restore, experiment_config, restore_tuner
    from thoraxmae.study.run.tune import DRIVER_RESOURCES, quiet_tune, start_pretrain_coordinator

    if "finetune" not in spec.phases:
        raise SpecError(f"study `{spec.name}` (stage {spec.stage}): confirmation repeats fine-tuning; a "
                        f"pre-training study has nothing to confirm")
    quiet_tune()
    from thoraxmae.study.run.trial import trial_driver

    # the study's trial driver: a confirmation point's plan carries its seed (study.spec.plan)
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, spec=spec), DRIVER_RESOURCES)
    folder = confirm_dir(spec)
    run_cbs = [ConfirmCallback(spec), *(callbacks or [])]
    if can_restore(folder):
        log.info("confirmation of %s found at %s: resuming it", spec.name, folder)
        tuner = restore_tuner(folder, trainable, run_cbs)
    else:
        points = confirm_points(spec, recipes, seeds, reference)
        tune_config = ray.tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent_trials)
        tuner = Tuner(trainable, param_space={CONFIRM_KEY: ray.tune.grid_search(points)}, tune_config=tune_config,
                      run_config=experiment_config(folder, run_cbs))
    coordinator = start_pretrain_coordinator(spec)
    grid = tuner.fit()
    del coordinator
    return grid
