"""Tune callback that writes the MLflow run schema (through study.tracking) from the study's driver.

A trial's status: `failed` when Tune reports an error (after Train's own retries), `completed` when
its last scored epoch reached the trial's epochs (or ASHA's max_t), `pruned` otherwise (ASHA
stopped it early). Per-epoch metrics are logged in one batch per report with step = epoch (the
phase's own epoch: a pipeline trial's pre-training epochs are logged under `pretrain/...`).

Exactly one value per metric and epoch, whatever was killed when: the first time this driver
touches a trial it reads which steps its run already has, metric by metric, and from then on logs
only (metric, step) pairs the run lacks. A result that carries its lineage's earlier results
(study.tracking.results' HISTORY_KEY: after a restart, and when a finished phase is re-reported) back-fills
the epochs the run lacks, in the same batch as the result itself: those whose checkpoint was
recorded while the driver died before logging them. An epoch that was logged and then run again
(its run restarted from an older checkpoint, e.g. pre-training with `checkpoint_every` > 1) keeps
the value logged first: MLflow keeps every value logged at a step, and a second one would make
the epoch ambiguous in the history, so the re-run's values live only in the checkpoint's history.

A trial's last scored checkpoint goes to MLflow's artifact store whatever the study's storage: one on
object storage is downloaded first (datasets.storage.local_dir).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from thoraxmae.datasets.storage import Location, local_dir
from thoraxmae.study import schema
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import TrialPlan
from thoraxmae.study.tracking.results import PHASE_KEY, Forwarded
from thoraxmae.study.tracking.writer import StudyTracker, schema_metrics, trial_params

log = logging.getLogger(__name__)
LOST_TRIAL = ("trial lost: the study's driver stopped before Ray Tune saved this trial in its state, so the "
              "resumed study could not continue it and sampled another trial instead")


class MlflowStudyCallback(Callback):
    role = schema.ROLE_TRIAL  # the role of the runs this callback writes, one per Tune trial
    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.tracker = StudyTracker(spec)
        self._runs: dict[str, str] = {}  # trial_id -> child run id
        self._checkpoints: dict[str, str] = {}  # trial_id -> latest scored-phase checkpoint dir
        self._logged: dict[str, dict[str, set[int]]] = {}  # run id -> {metric: steps the run has}
        self._reconciled = False
        self._pretrain_runs: dict[str, str] = {}  # registry key -> its pretrain run id (this experiment)
        self._trial_keys: dict[str, str] = {}  # trial id -> the pre-training key it fine-tuned from

    def setup(self, **info: Any) -> None:
        self.tracker.start_study()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._reconciled:  # the first step: Tune has restored the trials it knows
            self._reconciled = True
            self.drop_forgotten_trials({t.trial_id for t in trials})

    def drop_forgotten_trials(self, known: set[str]) -> None:
        """Runs of trials Tune does not know: the driver died after the trial started and before Tune
        saved its experiment state (it saves at most every ~10 s), so the resumed study samples a new
        trial instead. Such a run without metrics is deleted (it holds nothing and would count as a
        trial); one with metrics ends `failed`, saying so."""
        client = self.tracker.client
        runs = client.search_runs([self.tracker.experiment_id()],
                                  filter_string=f"tags.`{schema.TAG_PARENT}` = '{self.tracker.parent_id}'")
        for run in runs:
            tags = run.data.tags
            if (tags.get(schema.TAG_ROLE) != self.role or tags.get(schema.TAG_TRIAL_ID) in known
                    or tags.get(schema.TAG_STATUS) != schema.STATUS_RUNNING):
                continue
            if run.data.metrics:
                log.warning("trial %s is unknown to Tune's saved state; its run ends "
                            "failed", tags.get(schema.TAG_TRIAL_ID))
                self.tracker.end_trial(run.info.run_id, schema.STATUS_FAILED, error=LOST_TRIAL)
            else:
                log.info("trial %s never reached Tune's saved state and logged nothing; its run is deleted",
                         tags.get(schema.TAG_TRIAL_ID))
                client.delete_run(run.info.run_id)

    # --- trial lifecycle ---------------------------------------------------------------------------
    def _run_id(self, trial) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            run_id = self.tracker.start_trial(trial.trial_id, self.params(self.plan(trial)))
            self._runs[trial.trial_id] = run_id
            self._logged[run_id] = self.tracker.logged_steps(run_id)  # a resumed trial's run has some
        return run_id

    def _pretrain_run_id(self, trial, key: str) -> str:
        """The run of the shared pre-training `key` that this trial runs (study/registry.py)."""
        run_id = self._pretrain_runs.get(key)
        if run_id is None:
            params = {k: v for k,
                      v in trial_params(self.spec, {"pretrain": self.plan(trial).phase("pretrain")}).items()
                      if not k.startswith("data.")}
            run_id = self.tracker.start_pretrain(key, params)
            self._pretrain_runs[key] = run_id
            self._logged[run_id] = self.tracker.logged_steps(run_id)
        return run_id

    def _link(self, trial, run_id: str, fwd: Forwarded) -> None:
        """Tag a pipeline trial's run with the pre-training it fine-tunes from (once per trial)."""
        key = fwd.pretrain_key
        if key is None or self._trial_keys.get(trial.trial_id) == key:
            return
        self._trial_keys[trial.trial_id] = key
        pretrain_run = self._pretrain_runs.get(key) or self.tracker.find_pretrain(key, everywhere=True)
        self.tracker.link_pretrain(run_id, key, pretrain_run, reused=fwd.reused)
        if key in self._pretrain_runs:  # fine-tuning started: the pre-training it ran has finished
            self.tracker.end_trial(self._pretrain_runs[key], schema.STATUS_COMPLETED)

    def plan(self, trial) -> TrialPlan:
        """The trial's knobs and settings as the trial driver reads them."""
        return TrialPlan.from_config(self.spec, trial.config)

    def params(self, plan: TrialPlan) -> dict[str, str]:
        return trial_params(self.spec, plan.phases())

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._runs.pop(trial.trial_id, None)  # (re)started: look the run up again, reuse it if it exists
        self._run_id(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        fwd = Forwarded.of(result, self.spec.scored_phase)
        if fwd.phase == self.spec.scored_phase and result.get(CHECKPOINT_PATH_KEY):
            self._checkpoints[trial.trial_id] = result[CHECKPOINT_PATH_KEY]
        by_run: dict[str, list[tuple[int, dict[str, float]]]] = {}
        for r in [*fwd.lineage(), result]:
            earlier = Forwarded.of(r, self.spec.scored_phase)
            row = self.epoch_row(earlier)
            if row is not None:
                by_run.setdefault(self._target(trial, earlier), []).append(row)
        if not by_run:
            log.warning("trial %s reported no epoch; result not logged: %s", trial.trial_id, sorted(result))
            return
        if PHASE_KEY in result and fwd.phase == "finetune":
            self._link(trial, self._run_id(trial), fwd)
        for run_id, rows in by_run.items():
            self._log_new(run_id, rows)

    def _target(self, trial, fwd: Forwarded) -> str:
        """A shared pre-training's epochs go to its own run; everything else to the trial's."""
        if fwd.pretrain_key is not None and fwd.phase == "pretrain":
            return self._pretrain_run_id(trial, fwd.pretrain_key)
        return self._run_id(trial)

    def _log_new(self, run_id: str, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Log only the (metric, step) pairs the run lacks (see the module docstring)."""
        logged = self._logged[run_id]
        # the pre-training's own run: its metrics under their own names
        if run_id in self._pretrain_runs.values():
            rows = [(step, {k if k == schema.M_PRETRAIN_LOSS else k.removeprefix("pretrain/"): v
                            for k, v in metrics.items()}) for step, metrics in rows]
        fresh = []
        for step, metrics in rows:
            new = {k: v for k, v in metrics.items() if step not in logged.get(k, ())}
            if new:
                fresh.append((step, new))
        self.tracker.log_steps(run_id, fresh)
        for step, metrics in fresh:
            for key in metrics:
                logged.setdefault(key, set()).add(step)

    def epoch_row(self, fwd: Forwarded) -> tuple[int, dict[str, float]] | None:
        """(step, run-schema metrics) of one forwarded result; None when it has no epoch."""
        metrics = schema_metrics(fwd.result)
        pipeline = self.spec.stage == "pipeline"
        if pipeline and fwd.phase == "pretrain":
            metrics.pop(self.spec.metric, None)
        step = fwd.epoch(pipeline)
        return None if step is None else (step, metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        run_id = self._run_id(trial)
        status = trial_status(self.plan(trial), trial.last_result or {})
        self._finish_artifacts(trial, run_id)
        self.tracker.end_trial(run_id, status)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        run_id = self._run_id(trial)
        self._finish_artifacts(trial, run_id)
        self.tracker.end_trial(run_id, schema.STATUS_FAILED, error=trial_error(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._trial_keys:
            self.tracker.log_study_metrics(pretrain_costs(self.spec, self._trial_keys))
        self.tracker.end_study()

    # --- helpers -----------------------------------------------------------------------------------
    def _finish_artifacts(self, trial, run_id: str) -> None:
        path = self._checkpoints.get(trial.trial_id)
        try:
            if path:  # Ray names it inside the storage's filesystem
                uri = Location.of(self.spec.storage_path).child_uri(path)
                with local_dir(uri) as local:
                    if local.is_dir():
                        self.tracker.log_checkpoint(run_id, local)
                    else:
                        log.warning("trial %s: checkpoint %s is not on %s; not logged", trial.trial_id, uri,
                                    ("this machine's file system" if Location.of(uri).is_local
                                     else "the object store"))
            self.tracker.log_auc_table(run_id, self.spec.metric, self.spec.mode)
        except OSError as exc:  # an artifact problem must not lose the trial's status
            log.warning("trial %s: artifacts not logged: %s", trial.trial_id, exc)


def pretrain_costs(spec: StudySpec, trial_keys: dict[str, str]) -> dict[str, float]:
    """The parent run's pre-training compute: spent by this study (keys it pre-trained) vs pre-training in
    every trial (each trial pays its key's full cost), per cost unit."""
    from thoraxmae.study.registry import Registry

    registry = Registry(spec.storage_path)
    entries = {key: registry.lookup(key, verify=False) for key in set(trial_keys.values())}  # costs only
    out: dict[str, float] = {}
    for unit in (schema.M_COST_CPU_HOURS, schema.M_COST_GPU_HOURS):
        name = unit.removeprefix("cost/")
        cost = {k: e.cost.get(f"pretrain/{unit}") for k, e in entries.items() if e is not None}
        if not any(v is not None for v in cost.values()):
            continue
        spent = sum(v or 0.0 for k, v in cost.items() if entries[k].source.get("study") == spec.name)
        out[schema.M_PRETRAIN_COST_SPENT.format(unit=name)] = spent
        out[schema.M_PRETRAIN_COST_NO_REUSE.format(unit=name)] = sum(cost.get(k) or 0.0
                                                                     for k in trial_keys.values())
    return out


def trial_status(plan: TrialPlan, last_result: dict) -> str:
    """A trial Tune ended without error: completed when its scored phase ran all its epochs (or
    ASHA's max_t), pruned when ASHA stopped it earlier."""
    fwd = Forwarded.of(last_result, plan.spec.scored_phase)
    reached = last_result.get(schema.M_EPOCH) if fwd.phase == plan.spec.scored_phase else None
    return (schema.STATUS_COMPLETED if reached is not None and reached >= plan.scored_epochs()
            else schema.STATUS_PRUNED)


def trial_error(trial) -> str:
    """The trial's error: the tail of Tune's error trace (the exception type and message come last).
    Tune writes it to the trial's local folder before callbacks run, and syncs it to storage later."""
    try:
        local = trial.error_file
        text = Path(local).read_text() if local and Path(local).is_file() else trial.get_error()
    except OSError as exc:
        return f"trial failed; its error trace could not be read: {exc}"
    return str(text).strip()[-2000:] if text else "trial failed (no error recorded)"
