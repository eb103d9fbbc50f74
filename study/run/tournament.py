"""The recipe tournament: successive halving over pre-training epochs, one rung at a time (driver loop).

For each rung e of `search.tournament.rungs` (study/spec/tournament.py):
1. One Tune experiment (`<study>/rungs/e<e>-<session>`) whose trials are the rung's scoring tasks, each a
   (recipe, scoring configuration j) pair, ordered j-major so concurrent trials start different recipes'
   pre-trainings; at most `resources.max_concurrent_trials` run at once. A task's trial pre-trains its recipe
   to
   e through the registry (study/run/pipeline.py): the first task of a recipe continues the recipe's longest
   registered constant pre-training (one Ray Train run per segment, no epoch run twice), the others wait
   for it; then it fine-tunes `scoring.epochs` epochs, never stopped early (one Train run, one MLflow run).
2. The rung's scores (best validation metric of each complete fine-tune, read from its Train run's final
   marker) are cut by study/run/bracket.py; the evidence goes to the parent run (schema.ARTIFACT_RUNG) and to
   `<study>/tournament.json`, and the kept recipes go on to the next rung.
A rung where one recipe is left is not scored (nothing to decide) unless it is the last.

Everything is named by the task, not by Tune's trial id: the Train runs (`train-<task>-finetune`), the MLflow
run (trial id tag = task) and the registry entries (by content). So after a driver kill, `study resume`
re-submits the tasks of the current rung whose MLflow run is not complete: a finished one re-reports its final
result from its marker (its run is back-filled and closed), a half-done one resumes its Train runs from
their checkpoints, and decided rungs are read back from `tournament.json`. Nothing is re-run or logged twice.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import ray.tune
from ray.tune import Callback, Tuner
from ray.tune.search import BasicVariantGenerator

from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema
from thoraxmae.study.registry import Registry, entry_id, horizon_free
from thoraxmae.study.run import bracket
from thoraxmae.study.run.experiment import experiment_config
from thoraxmae.study.run.pipeline import trial_key
from thoraxmae.study.run.trial import (
    FINAL_MARKER,
    _phase,
    _shared_pretrain,
    checkpoint_file,
    read_marker,
)
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import TrialPlan
from thoraxmae.study.spec.space import CategoricalSpace, apply_knobs
from thoraxmae.study.spec.tournament_plan import planned_epochs, recipes, scoring_epochs, scoring_points
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.callback import MlflowStudyCallback
from thoraxmae.study.tracking.results import PHASE_KEY

log = logging.getLogger(__name__)
# A scoring trial's Tune config is flat, like a search trial's: its knobs, plus these (study.spec.plan ignores
# them).
TASK_NAME, TASK_RUNG, TASK_RECIPE, TASK_CONFIG = "tournament.task", "tournament.rung", "tournament.recipe", \
    "tournament.config"
STATE_FILE = "tournament.json"  # in the study's folder: the decided rungs (bracket.evidence), in order
SEED_KNOB = "finetune.seed"


class TournamentError(RuntimeError):
    """A rung could not be decided (a scoring task failed): `study resume` retries its tasks."""


@dataclass(frozen=True)
class Task:
    epochs: int
    recipe: int
    config: int

    @property
    def name(self) -> str:
        return f"e{self.epochs}-r{self.recipe}-s{self.config}"


def label(recipe: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(recipe.items()))


def rung_spec(spec: StudySpec, epochs: int) -> StudySpec:
    """The spec a rung's trials run: pre-training to `epochs`, `scoring.epochs` of fine-tuning, the paired
    fine-tuning seed as a knob (so it is a logged param), no scheduler and no tournament."""
    seeds = [p[SEED_KNOB] for p in scoring_points(spec)]
    space = {**spec.search.space, SEED_KNOB: CategoricalSpace(type="categorical", choices=seeds)}
    search = spec.search.model_copy(
        update={"space": space, "tournament": None, "points_to_evaluate": [],
                "scheduler": spec.search.scheduler.model_copy(update={"type": "none"})})
    return spec.model_copy(update={
        "pretrain": spec.pretrain.model_copy(update={"epochs": epochs}),
        "finetune": spec.finetune.model_copy(update={"epochs": scoring_epochs(spec)}), "search": search})


def tournament_trial(config: dict[str, Any], spec: StudySpec) -> None:
    """Tune function trainable of one scoring task: the recipe's pre-training to the rung (shared, continued),
    then one complete fine-tune. Runs are named by the task (module docstring)."""
    task = config[TASK_NAME]
    plan = TrialPlan.from_config(spec, config)
    runs_dir = StudyStorage(spec.storage_path).train_runs(spec.name)
    done, link, ran_here = _shared_pretrain(plan, task)
    prior = (done.get("history") or [done["metrics"]]) if ran_here else []
    _phase("finetune", plan, f"train-{task}-finetune", runs_dir, pipeline=True,
           init=checkpoint_file(done["checkpoint"]), prior=prior, extra=link,
           step_offset=int(done["metrics"].get(f"pretrain/{schema.M_EPOCH}", 0)) if ran_here else 0)


class TournamentCallback(MlflowStudyCallback):
    """The study's MLflow callback with runs keyed by task: a task's run is found again in any later
    session."""

    def drop_forgotten_trials(self, known: set[str]) -> None:
        return None  # a task's run is adopted by the task's next trial, never dropped

    def _run_id(self, trial) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            point = trial.config
            tags = {schema.TAG_TOURNAMENT_TASK: point[TASK_NAME],
                    schema.TAG_TOURNAMENT_RUNG: str(point[TASK_RUNG]),
                    schema.TAG_TOURNAMENT_RECIPE: point[TASK_RECIPE],
                    schema.TAG_TOURNAMENT_CONFIG: str(point[TASK_CONFIG])}
            run_id = self.tracker.start_trial(point[TASK_NAME], self.params(self.plan(trial)), tags=tags)
            self._runs[trial.trial_id] = run_id
            self._logged[run_id] = self.tracker.logged_steps(run_id)
        return run_id


@dataclass
class Bracket:
    """The tournament's state: the decided rungs' evidence, in order."""

    rungs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Location) -> Bracket:
        path = folder / STATE_FILE
        return cls(json.loads(path.read_text())["rungs"]) if path.is_file() else cls()

    def save(self, folder: Location) -> None:
        (folder / STATE_FILE).write_text(json.dumps({"rungs": self.rungs}, indent=1))


def start_tournament(spec: StudySpec, callbacks: list[Callback] | None = None,
                     resume: bool = False) -> dict[str, Any]:
    """`study run` / `study resume` of a tournament (Ray must be initialised): checks, the study's folder with
    its
    spec, the parent run, then the bracket (run_tournament)."""
    from thoraxmae.study.spec.load import dump_spec
    from thoraxmae.study.tracking.lookup import SPEC_FILE, check_new_study, check_resumable, study_dir

    folder = study_dir(spec.storage_path, spec.name)
    if resume:
        check_resumable(spec)
    else:
        check_new_study(spec)
        folder.mkdir()
        (folder / SPEC_FILE).write_text(dump_spec(spec))
    _tracker(spec)  # the parent run, with the study's own spec (the rungs' Tuners find it)
    return run_tournament(spec, folder, callbacks)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The bracket as a few console lines (the CLI prints them)."""
    lines = []
    for rung in summary["rungs"]:
        if rung.get("unscored"):
            lines.append(f"rung {rung['epochs']}: {rung['leader']} (alone, not scored)")
            continue
        shown = "; ".join(f"{s['recipe']}: {s['mean']:.4f}{'' if s['kept'] else ' (dropped)'}"
                          for s in rung["standings"])
        lines.append(f"rung {rung['epochs']}: {shown}")
    lines.append(f"pre-training epochs: {summary['pretrain_epochs']} spent, {summary['full_epochs']} for "
                 f"every recipe to {summary['one_epochs']}, {summary['one_epochs']} for one")
    lines.append(f"winner: {summary['winner']}")
    if summary["next"]:
        lines.append(f"next: {summary['next']}")
    return lines


def run_tournament(spec: StudySpec, folder: Location,
                   callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Run (or resume) the whole bracket; returns the summary logged as schema.ARTIFACT_TOURNAMENT."""
    from thoraxmae.study.run.tune import DRIVER_RESOURCES, quiet_tune, start_pretrain_coordinator

    quiet_tune()
    t = spec.search.tournament
    all_recipes = recipes(spec)
    labels = {i: label(r) for i, r in enumerate(all_recipes)}
    points = scoring_points(spec)
    state = Bracket.load(folder)
    coordinator = start_pretrain_coordinator(spec)
    alive = list(range(len(all_recipes)))
    for r, epochs in enumerate(t.rungs):
        last = r == len(t.rungs) - 1
        if r < len(state.rungs):  # decided in an earlier session
            alive = [s["index"] for s in state.rungs[r]["standings"] if s["kept"]]
            continue
        if len(alive) == 1 and not last:
            state.rungs.append({"epochs": epochs, "keep": t.keep, "tie_rule": bracket.TIE_RULE,
                                "leader": labels[alive[0]], "kept": [labels[alive[0]]], "unscored": True,
                                "standings": [{"recipe": labels[alive[0]], "index": alive[0], "kept": True}]})
            state.save(folder)
            continue
        rspec = rung_spec(spec, epochs)
        tasks = [Task(epochs, i, j) for j in range(len(points)) for i in alive]
        open_tasks = [task for task in tasks if not _closed(rspec, task)]
        if open_tasks:
            configs = [{**all_recipes[task.recipe], **points[task.config], TASK_NAME: task.name,
                        TASK_RUNG: epochs,
                        TASK_RECIPE: labels[task.recipe], TASK_CONFIG: task.config} for task in open_tasks]
            session = sum(1 for p in (folder / "rungs").iterdir() if p.name.startswith(f"e{epochs}-")) \
                if (folder / "rungs").is_dir() else 0
            trainable = ray.tune.with_resources(ray.tune.with_parameters(tournament_trial, spec=rspec),
                                                DRIVER_RESOURCES)
            tune_config = ray.tune.TuneConfig(  # exactly these points, in this order (j-major)
                metric=spec.metric, mode=spec.mode, num_samples=len(configs),
                search_alg=BasicVariantGenerator(points_to_evaluate=configs,
                                                 max_concurrent=spec.resources.max_concurrent_trials),
                max_concurrent_trials=spec.resources.max_concurrent_trials)
            run_config = experiment_config(folder / "rungs" / f"e{epochs}-{session}",
                                           [TournamentCallback(rspec), *(callbacks or [])])
            # every key a point sets must be in the space
            Tuner(trainable, param_space=dict.fromkeys(configs[0]),
                  tune_config=tune_config, run_config=run_config).fit()
        scores = {i: [task_score(rspec, Task(epochs, i, j)) for j in range(len(points))] for i in alive}
        standings = bracket.decide(scores, {i: labels[i] for i in alive}, t.keep, spec.mode, last=last)
        state.rungs.append(bracket.evidence(epochs, standings, t.keep))
        state.save(folder)
        _log_rung(spec, state.rungs[-1])
        alive = [s.index for s in standings if s.kept]
    del coordinator
    summary = summarize(spec, state, all_recipes)
    _log_summary(spec, summary)
    return summary


def _closed(rspec: StudySpec, task: Task) -> bool:
    """Is the task's MLflow run complete (its score logged and the run ended)?"""
    from thoraxmae.study.tracking.writer import StudyTracker

    tracker = StudyTracker(rspec)
    tracker.parent_id = tracker.find_parent()
    if tracker.parent_id is None:
        return False
    run_id = tracker.find_trial(task.name)
    if run_id is None:
        return False
    run = tracker.client.get_run(run_id)
    return run.info.status == "FINISHED" and run.data.tags.get(schema.TAG_STATUS) == schema.STATUS_COMPLETED


def task_score(rspec: StudySpec, task: Task) -> float:
    """The best validation score of the task's complete fine-tune (its Train run's final marker)."""
    marker = (StudyStorage(rspec.storage_path).train_runs(rspec.name) / f"train-{task.name}-finetune"
              / FINAL_MARKER)
    done = read_marker(marker)
    if done is None:
        raise TournamentError(f"scoring task {task.name} did not finish (no {marker}); `thoraxmae study "
                              f"resume {rspec.name}` runs it again")
    values = [h[rspec.metric] for h in done.get("history") or [done["metrics"]]
              if h.get(PHASE_KEY) == "finetune" and isinstance(h.get(rspec.metric), int | float)]
    if not values:
        raise TournamentError(f"scoring task {task.name} reported no {rspec.metric}")
    return max(values) if rspec.mode == "max" else min(values)


def summarize(spec: StudySpec, state: Bracket, all_recipes: list[dict[str, Any]]) -> dict[str, Any]:
    """The bracket, the pre-training epochs spent (counted from the registry's histories), and the winner."""
    t = spec.search.tournament
    registry = Registry(spec.storage_path)
    reached: dict[str, int] = {}
    spent = 0
    for i, recipe in enumerate(all_recipes):
        last = max((r["epochs"] for r in state.rungs if any(s["index"] == i for s in r["standings"])),
                   default=0)
        reached[label(recipe)] = last
        cfg = apply_knobs(spec.pretrain, "pretrain", recipe).model_copy(update={"epochs": last})
        entry = registry.lookup(entry_id(trial_key(spec, cfg)[0], cfg), verify=False) if last else None
        if entry is not None:
            spent += len({h.get("pretrain/epoch") for h in entry.history})
    final = state.rungs[-1] if state.rungs else None
    winner = final["leader"] if final else None
    encoder = None
    if winner is not None and horizon_free(spec.pretrain):
        idx = next(s["index"] for s in final["standings"] if s["recipe"] == winner)
        cfg = apply_knobs(spec.pretrain, "pretrain", all_recipes[idx])
        encoder = f"registry:{entry_id(trial_key(spec, cfg)[0], cfg)}"
    e_last = t.rungs[-1]
    return {"rungs": state.rungs, "recipes": [label(r) for r in all_recipes], "reached": reached,
            "pretrain_epochs": spent, "planned_epochs": planned_epochs(len(all_recipes), t.rungs, t.keep),
            "full_epochs": len(all_recipes) * e_last, "one_epochs": e_last, "winner": winner,
            "encoder": encoder,
            "next": (f"thoraxmae study run FINETUNE_STUDY.yaml --set finetune.init={encoder} "
                     f"--set storage_path={spec.storage_path}") if encoder else None}


def _tracker(spec: StudySpec):
    from thoraxmae.study.tracking.writer import StudyTracker

    tracker = StudyTracker(spec)
    tracker.parent_id = tracker.find_parent() or tracker.start_study()
    return tracker


def _log_rung(spec: StudySpec, rung: dict[str, Any]) -> None:
    tracker = _tracker(spec)
    tracker.client.log_text(tracker.parent_id, json.dumps(rung, indent=1),
                            schema.ARTIFACT_RUNG.format(epochs=rung["epochs"]))


def _log_summary(spec: StudySpec, summary: dict[str, Any]) -> None:
    tracker = _tracker(spec)
    tracker.client.log_text(tracker.parent_id, json.dumps(summary, indent=1), schema.ARTIFACT_TOURNAMENT)
    tracker.log_study_metrics({schema.M_TOURNAMENT_EPOCHS: float(summary["pretrain_epochs"]),
                               schema.M_TOURNAMENT_FULL: float(summary["full_epochs"]),
                               schema.M_TOURNAMENT_ONE: float(summary["one_epochs"])})
    tags = {schema.TAG_TOURNAMENT_WINNER: summary["winner"] or ""}
    if summary["encoder"]:
        tags[schema.TAG_TOURNAMENT_ENCODER] = summary["encoder"]
    for k, v in tags.items():
        tracker.client.set_tag(tracker.parent_id, k, v)
    tracker.end_study()
