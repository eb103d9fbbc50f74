"""Confirmation of a study's recipes: the chosen recipes and a reference recipe, re-run with n fresh seeds
each (the same seeds for every recipe, so differences are paired by seed).

    thoraxmae study confirm NAME [--top K] [--seeds N] [--pretrain-seeds P] [--reference FILE] [--replace]

or a spec's `confirm:` section, run at the end of `study run`. The caller chooses the recipes (the shell asks
analysis/candidates.py: the top-k median recipe and the configurations a model of all scored trials ranks
best, which resist the winner's curse of a raw top-1). A recipe whose knobs equal the reference's is not run
twice: it runs once, as `reference`, tagged with the trial it came from. The runs are Tune experiments of
their own in `StudyStorage.confirm(name)`, local or on object storage, whose trials run the study's own trial
driver with the recipe's knobs and `finetune.seed` set to the seed. In a pipeline study each recipe is
fine-tuned from its registered pre-training (`pretrain_seeds` 1), or from P pre-trainings with P seeds shared
by all recipes: the study's own seed (reused) and P - 1 others (pre-trained again; the seed is in the
registry key), every (recipe, pre-training seed, seed) one run.

Running it again resumes what a killed confirmation left (Tune restores its own experiments), then runs the
points of this request that no earlier part holds (other --top/--seeds/--pretrain-seeds) as one more Tune
experiment, `StudyStorage.confirm_part(name, n)`: a restored Tune experiment cannot take new trials. A
request with another reference recipe is refused (`--replace` removes the confirmation first).
Each run is an MLflow child run of the study's parent with role `confirm`, `thoraxmae.recipe` (`trial-<id>`,
`median` or `reference`), `thoraxmae.source_run`, param `seed` and, in a pipeline study, the pre-training's
`pretrain.seed` (docs/mlflow-schema.md); analysis.confirm reads them into the report's verdicts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.run.confirm_parts import (
    ConfirmResult,
    confirm_parts,
    missing_points,
)
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import (
    CONFIRM_KEY,
    CONFIRM_PRETRAIN_SEED,
    CONFIRM_RECIPE,
    CONFIRM_SEED,
    CONFIRM_SOURCE,
)
from thoraxmae.study.spec.space import same_point, split_knob
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.callback import MlflowStudyCallback

log = logging.getLogger(__name__)
SEED_BASE = 1000  # confirmation seeds: 1000, 1001, ... (never a search trial's seed 0)


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
            raise SpecError(f"--reference {reference}: expected `knob: value` lines, e.g. "
                            f"finetune.layer_decay: 0.75")
        values = raw
        _check_reference_knobs(spec, reference, raw)
    point = {}
    for knob, dist in spec.search.space.items():
        phase, field = knob.split(".", 1)
        value = values.get(knob, getattr(spec.phase_config(phase), field))
        if not dist.contains(value) and knob in values:
            raise SpecError(f"reference {knob}={value!r} is outside the study's space "
                            f"{dist.model_dump(exclude_none=True)}")
        point[knob] = value
    return point


def _check_reference_knobs(spec: StudySpec, reference: Path, raw: dict[str, Any]) -> None:
    """Every knob a --reference file names is a knob, and one the study either searches or fixes at the same
    value (a reference cannot differ from the study in a knob it does not vary)."""
    for knob, value in raw.items():
        try:
            phase, field = split_knob(knob)
        except ValueError as exc:
            raise SpecError(f"--reference {reference}: {exc}") from None
        if knob in spec.search.space or phase not in spec.phases:
            continue
        fixed = getattr(spec.phase_config(phase), field)
        if not same_point({knob: value}, {knob: fixed}):
            raise SpecError(f"--reference {reference}: {knob}={value!r}, but study `{spec.name}` fixes it at "
                            f"{fixed!r} (searched: {', '.join(spec.search.space)})")


class ConfirmRecipe(NamedTuple):
    """A recipe to confirm, as the caller chose it."""

    label: str  # `trial-<id>` or `median` (schema.RECIPE_TRIAL_PREFIX, schema.RECIPE_MEDIAN)
    source_run: str | None  # MLflow run id of the search trial that ran exactly this recipe (None: none did)
    knobs: dict[str, Any]  # every searched knob's value


def recipe_knobs(spec: StudySpec, recipe: ConfirmRecipe) -> dict[str, Any]:
    """The recipe's value of every searched knob, typed by the knob's space and inside it (SpecError
    otherwise)."""
    out = {}
    for knob, dist in spec.search.space.items():
        if knob not in recipe.knobs or recipe.knobs[knob] is None:
            raise SpecError(f"confirm: recipe `{recipe.label}` has no value for the searched knob {knob}")
        value = parse_param(dist, str(recipe.knobs[knob]))
        if not dist.contains(value):
            raise SpecError(f"confirm: recipe `{recipe.label}` sets {knob}={value!r}, outside the study's "
                            f"space "
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


def check_sizes(top: int, seeds: int, pretrain_seeds: int = 1, spec: StudySpec | None = None) -> None:
    if top < 1 or seeds < 2:
        raise SpecError(f"confirm: --top {top} --seeds {seeds}: need at least 1 recipe and 2 seeds "
                        f"(a spread)")
    if pretrain_seeds < 1:
        raise SpecError(f"confirm: --pretrain-seeds {pretrain_seeds}: need at least 1")
    if pretrain_seeds > 1 and spec is not None and spec.stage != "pipeline":
        raise SpecError(f"confirm: --pretrain-seeds {pretrain_seeds}: study `{spec.name}` is stage "
                        f"{spec.stage} and pre-trains nothing to repeat; it needs a pipeline study")


def pretrain_seed_list(spec: StudySpec, n: int) -> list[int | None]:
    """The pre-training seeds every recipe is fine-tuned from: [None] outside a pipeline study, else the
    study's own (its registered pre-trainings are reused) and n - 1 others, SEED_BASE upwards."""
    if "pretrain" not in spec.phases:
        return [None]
    own = spec.pretrain.seed
    return [own, *[s for s in range(SEED_BASE, SEED_BASE + n) if s != own][:n - 1]]


def confirm_points(spec: StudySpec, recipes: list[ConfirmRecipe], seeds: int, reference: Path | None,
                   pretrain_seeds: int = 1) -> list[dict[str, Any]]:
    """Every (recipe, pre-training seed, seed) configuration, recipe-major, the reference last; the seeds
    are shared by all recipes (paired). A recipe equal to the reference runs once, as the reference, tagged
    with its trial."""
    if not recipes:
        raise SpecError(f"study `{spec.name}`: no scored trial to confirm (all failed or unscored)")
    check_sizes(len(recipes), seeds, pretrain_seeds, spec)
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
    return [{**knobs, CONFIRM_RECIPE: label, CONFIRM_SOURCE: rid, CONFIRM_SEED: SEED_BASE + i,
             **({} if ps is None else {CONFIRM_PRETRAIN_SEED: ps})}
            for label, rid, knobs in chosen for ps in pretrain_seed_list(spec, pretrain_seeds)
            for i in range(seeds)]


class ConfirmCallback(MlflowStudyCallback):
    """Confirmation runs (study/run/confirm.py): role confirm, tagged with the recipe they repeat, param seed
    (and, through the pre-training's config, `pretrain.seed`)."""

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
                callbacks: list | None = None, pretrain_seeds: int = 1) -> ConfirmResult:
    """Run the confirmation of a finished study: resume what earlier parts left unfinished, then run this
    request's missing points as one more part."""
    import ray.tune
    from ray.tune import Tuner

    from thoraxmae.study.run.experiment import experiment_config, restore_tuner
    from thoraxmae.study.run.tune import DRIVER_RESOURCES, quiet_tune, start_pretrain_coordinator

    if "finetune" not in spec.phases:
        raise SpecError(f"study `{spec.name}` (stage {spec.stage}): confirmation repeats fine-tuning; a "
                        f"pre-training study has nothing to confirm")
    requested = confirm_points(spec, recipes, seeds, reference, pretrain_seeds)
    quiet_tune()
    from thoraxmae.study.run.trial import trial_driver

    # the study's trial driver: a confirmation point's plan carries its seeds (study.spec.plan)
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_driver, spec=spec), DRIVER_RESOURCES)
    coordinator = start_pretrain_coordinator(spec)
    runs = []
    parts = confirm_parts(spec)
    for folder in parts:
        log.info("confirmation of %s found at %s: resuming it", spec.name, folder)
        grid = restore_tuner(folder, trainable, [ConfirmCallback(spec), *(callbacks or [])]).fit()
        runs += _ran(grid)
    missing = missing_points(spec, requested, [p for p, _ in runs])
    if missing:
        folder = StudyStorage(spec.storage_path).confirm_part(spec.name, len(parts) + 1)
        tune_config = ray.tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent_trials)
        run_config = experiment_config(folder, [ConfirmCallback(spec), *(callbacks or [])])
        grid = Tuner(trainable, param_space={CONFIRM_KEY: ray.tune.grid_search(missing)},
                     tune_config=tune_config, run_config=run_config).fit()
        runs += _ran(grid)
    del coordinator
    return ConfirmResult(requested, runs, len(missing))


def _ran(grid) -> list[tuple[dict[str, Any], bool]]:
    """(point, failed) of every trial of a Tune ResultGrid of confirmation points."""
    return [((r.config or {}).get(CONFIRM_KEY, {}), r.error is not None) for r in grid]
