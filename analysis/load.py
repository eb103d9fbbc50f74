"""Read one study back from MLflow: the parent run, its spec.yaml, every trial's child run, its
confirmation runs and the pre-training runs its trials fine-tuned from.

Only the run schema of study/schema.py is read (docs/mlflow-schema.md); nothing here needs Ray. The
study is found by study/tracking/lookup.py (its parent run in any experiment of the tracking store, filter
values quoted there); the result is plain records, which analysis/tables.py turns into tidy tables.
"""
from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thoraxmae.analysis.errors import ReportError
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.tracking import lookup
from thoraxmae.study.tracking.uri import client_for, default_tracking_uri, mlflow_errors

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what): the CLI draws it, library code never prints


@dataclass
class TrialRecord:
    """One child run as MLflow holds it (params are strings, metrics the latest values)."""

    run_id: str
    trial_id: str
    status: str  # completed | pruned | failed | running (study.schema)
    start_time: float | None  # seconds since the epoch
    end_time: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(epoch, value)]
    error: str | None = None  # a failed trial's error (its thoraxmae.error tag)
    pretrain_key: str | None = None  # the registry key of the pre-training it fine-tuned (pipeline reuse)
    pretrain_run: str | None = None  # that pre-training's MLflow run id
    pretrain_reused: bool = False  # True when the trial fine-tuned a pre-training it did not run itself


@dataclass
class ConfirmRecord:
    """One confirmation run: a recipe (a search trial's, or the reference) re-run with one seed."""

    run_id: str
    recipe: str  # `trial-<trial_id>` or `reference` (study.schema.TAG_RECIPE)
    source_run: str | None  # MLflow run id of the trial repeated (None for the reference)
    seed: int | None  # None when the `seed` param is missing or not an integer
    status: str  # completed | failed | running
    start_time: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class PretrainRecord:
    """One shared pre-training run (role `pretrain`): this study's own, or another study's that it reused."""

    run_id: str
    key: str | None  # its registry key (thoraxmae.pretrain_key)
    study: str | None  # the study that ran it (thoraxmae.study)
    own: bool  # run by this study (a child of its parent run)
    status: str
    params: dict[str, str]
    metrics: dict[str, float]  # latest values: the final `pretrain/loss`, the cumulative `cost/*_hours`


@dataclass
class StudyRecord:
    """A study as read from MLflow: where it lives, what it optimised and its trials."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    spec: dict[str, Any] | None  # the parent's spec.yaml as a plain dict (None when absent)
    stage: str
    metric: str
    mode: str  # max | min
    knobs: tuple[str, ...]  # searched knobs (spec paths)
    space: dict[str, dict[str, Any]]  # the spec's search.space (may be empty)
    trials: list[TrialRecord]
    # confirmation runs (none: the recipe is exploratory)
    confirm: list[ConfirmRecord] = field(default_factory=list)
    # own pre-training runs + those its trials reused
    pretrains: list[PretrainRecord] = field(default_factory=list)
    parent_metrics: dict[str, float] = field(default_factory=dict)  # the parent run's latest metrics
    missing_pretrain_runs: list[str] = field(default_factory=list)  # run ids trials link to that MLflow lacks
    # package -> version the study ran on (env.* params)
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def scored_phase(self) -> str:
        return "pretrain" if self.stage == "pretrain" else "finetune"


def load_study(name: str, tracking_uri: str | None = None, progress: Progress | None = None) -> StudyRecord:
    """Every trial of study `name` with its params, latest metrics and per-epoch objective curve.

    Raises ReportError naming the study and the tracking URI when the store, the study or its trial
    runs are missing.
    """
    uri = tracking_uri or default_tracking_uri()
    with _report_errors(name):
        lookup.check_study_name(name)
        client = client_for(uri)  # file://, bogus://, a missing SQLite file: one line, nothing created
        with mlflow_errors(uri):
            parent, runs = _parent_and_trials(client, name, uri)
            parent_id = parent.info.run_id if parent is not None else None
            experiment_id = (parent or runs[0]).info.experiment_id
            spec = _read_spec(client, parent_id) if parent_id else None
            confirm_runs = _role_runs(client, experiment_id, name, parent_id, schema.ROLE_CONFIRM)
            own_pretrains = _role_runs(client, experiment_id, name, parent_id, schema.ROLE_PRETRAIN)
            parent_params = dict(parent.data.params) if parent is not None else {}
            stage = _stage(spec, parent)
            metric, mode = objective_of(spec, parent_params, stage)
            trials = [_record(client, run, metric, i, len(runs), progress) for i, run in enumerate(runs)]
            confirm = [_confirm_record(client, run, metric) for run in confirm_runs]
            pretrains, missing = _pretrain_records(client, own_pretrains, trials)
    space = dict(((spec or {}).get("search") or {}).get("space") or {})
    return StudyRecord(name=name, tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent_id,
                       spec=spec, stage=stage, metric=metric, mode=mode,
                       knobs=_searched_knobs(space, parent_params, trials), space=space, trials=trials,
                       confirm=confirm, pretrains=pretrains,
                       parent_metrics=dict(parent.data.metrics) if parent is not None else {},
                       missing_pretrain_runs=missing, environment=environment_of(parent_params))


def environment_of(parent_params: dict[str, str]) -> dict[str, str]:
    """The study run's `env.<package>` params as {package: version}, in schema order (python first)."""
    order = ["python", *schema.ENV_PACKAGES]
    found = {k[len(schema.ENV_PARAM_PREFIX):]: v for k, v in parent_params.items()
             if k.startswith(schema.ENV_PARAM_PREFIX)}
    return dict(sorted(found.items(),
                       key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def objective_of(spec: dict | None, parent_params: dict[str, str], stage: str) -> tuple[str, str]:
    """(metric, mode): the spec's search.metric/mode, else what study.tracking.lookup.objective reads from the
    parent's params (defaults: val/mauc max; pretrain/loss min for a pre-training study)."""
    search = (spec or {}).get("search") or {}
    params = {f"search.{k}": search.get(k) or parent_params.get(f"search.{k}") for k in ("metric", "mode")}
    return lookup.objective(stage, {k: v for k, v in params.items() if v})


@contextmanager
def _report_errors(name: str) -> Iterator[None]:
    """The lookup's one-line SpecErrors (bad name, bad tracking URI, MLflow failures) as ReportErrors."""
    try:
        yield
    except SpecError as exc:
        text = str(exc)
        raise ReportError(text if text.startswith("study") else f"study `{name}`: {text}") from None


def _parent_and_trials(client, name: str, uri: str) -> tuple[Any, list]:
    """The study's parent run (None for trial runs logged without one) and its trial runs."""
    parent = lookup.find_parent(client, name)
    if parent is not None:
        runs = lookup.trial_runs(client, parent) or _by_trial_id(
            lookup.tagged_runs(client, name, schema.ROLE_TRIAL, [parent.info.experiment_id]))
        if not runs:
            raise ReportError(f"study `{name}` has no trial runs in experiment {parent.info.experiment_id} "
                              f"(tracking URI {uri}); has the study started?")
        return parent, runs
    runs = _by_trial_id(lookup.tagged_runs(client, name, schema.ROLE_TRIAL))
    if runs:
        return None, runs
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ReportError(f"study `{name}`: its MLflow experiment {exp.experiment_id} is deleted (tracking "
                          f"URI {uri}); restore it with `mlflow experiments restore --experiment-id "
                          f"{exp.experiment_id}`")
    raise ReportError(f"study `{name}` not found: no run tagged {schema.TAG_ROLE}={schema.ROLE_STUDY} and "
                      f"{schema.TAG_STUDY}={name} in any experiment (tracking URI {uri})")


def _by_trial_id(runs: list) -> list:
    """One run per trial id (the latest, as study.tracking.lookup.trial_runs keeps)."""
    by_trial: dict[str, Any] = {}
    for run in runs:
        by_trial[run.data.tags.get(schema.TAG_TRIAL_ID, run.info.run_id)] = run
    return list(by_trial.values())


def _role_runs(client, experiment_id: str, name: str, parent_id: str | None, role: str) -> list:
    """The study's runs of one role: children of the parent run, else (no parent, or runs logged without
    the parent tag) the runs of that role tagged with the study's name."""
    runs = []
    if parent_id:
        runs = lookup.search_all(client, [experiment_id],
                                 f"tags.`{schema.TAG_ROLE}` = {lookup.filter_value(role)} and "
                                 f"tags.`{schema.TAG_PARENT}` = {lookup.filter_value(parent_id)}")
    return runs or lookup.tagged_runs(client, name, role, [experiment_id])


def _pretrain_records(client, own: list, trials: list[TrialRecord]) -> tuple[list[PretrainRecord], list[str]]:
    """This study's pre-training runs, plus the runs its trials link to that live elsewhere (another
    study's, reused through the shared registry), looked up by id; the ids MLflow lacks come back apart."""
    from mlflow.exceptions import MlflowException

    records = [_pretrain_record(run, own=True) for run in own]
    known = {r.run_id for r in records}
    missing = []
    for run_id in sorted({t.pretrain_run for t in trials if t.pretrain_run} - known):
        try:
            run = client.get_run(run_id)
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            log.warning("pre-training run %s, linked from a trial, is not in MLflow", run_id)
            missing.append(run_id)
            continue
        records.append(_pretrain_record(run, own=False))
    return records, missing


def _pretrain_record(run, own: bool) -> PretrainRecord:
    tags = run.data.tags
    return PretrainRecord(run_id=run.info.run_id, key=tags.get(schema.TAG_PRETRAIN_KEY),
                          study=tags.get(schema.TAG_STUDY),
                          own=own, status=_status(run, f"pre-training run {run.info.run_id}"),
                          params=dict(run.data.params),
                          metrics={k: v for k, v in run.data.metrics.items() if math.isfinite(v)})


def _read_spec(client, parent_id: str) -> dict | None:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent_id, schema.ARTIFACT_SPEC, tmp)
            raw = yaml.safe_load(Path(path).read_text())
        except (MlflowException, OSError, yaml.YAMLError) as exc:
            log.warning("parent run %s: %s not readable (%s); using "
                        "defaults", parent_id, schema.ARTIFACT_SPEC, exc)
            return None
    return raw if isinstance(raw, dict) else None


def _stage(spec: dict | None, parent) -> str:
    stage = (spec or {}).get("stage")
    if not stage and parent is not None:
        stage = parent.data.tags.get(schema.TAG_STAGE)
    return stage or "finetune"


def _record(client, run, metric: str, i: int, total: int, progress: Progress | None) -> TrialRecord:
    tags = run.data.tags
    trial_id = tags.get(schema.TAG_TRIAL_ID, run.info.run_id[:8])
    status = _status(run, f"trial {trial_id}")
    history = _history(client, run, metric)
    if progress is not None:
        progress(i + 1, total, f"trial {trial_id}")
    return TrialRecord(run_id=run.info.run_id, trial_id=trial_id, status=status,
                       start_time=run.info.start_time / 1000 if run.info.start_time else None,
                       end_time=run.info.end_time / 1000 if run.info.end_time else None,
                       params=dict(run.data.params), metrics=dict(run.data.metrics), history=history,
                       error=tags.get(schema.TAG_ERROR),
                       pretrain_key=tags.get(schema.TAG_PRETRAIN_KEY) or None,
                       pretrain_run=tags.get(schema.TAG_PRETRAIN_RUN) or None,
                       pretrain_reused=tags.get(schema.TAG_PRETRAIN_REUSED, "").lower() == "true")


def _confirm_record(client, run, metric: str) -> ConfirmRecord:
    tags, params = run.data.tags, dict(run.data.params)
    recipe = tags.get(schema.TAG_RECIPE) or "unlabelled"
    try:
        seed = int(params[schema.PARAM_SEED])
    except (KeyError, ValueError):
        seed = None
    return ConfirmRecord(run_id=run.info.run_id, recipe=recipe, source_run=tags.get(schema.TAG_SOURCE_RUN),
                         seed=seed,
                         status=_status(run, f"confirmation run {run.info.run_id}"),
                         start_time=run.info.start_time / 1000 if run.info.start_time else None,
                         params=params, metrics=dict(run.data.metrics), history=_history(client, run, metric),
                         error=tags.get(schema.TAG_ERROR))


def _status(run, what: str) -> str:
    status = (run.data.tags.get(schema.TAG_STATUS)
              or schema.FROM_MLFLOW_STATUS.get(run.info.status, schema.STATUS_RUNNING))
    if status not in schema.TRIAL_STATUSES:
        log.warning("%s: unknown status %r; treated as running", what, status)
        status = schema.STATUS_RUNNING
    return status


def _history(client, run, metric: str) -> dict[str, list[tuple[int, float]]]:
    return {metric: sorted((int(m.step), float(m.value))
                           for m in client.get_metric_history(run.info.run_id, metric))}


def _searched_knobs(space: dict, parent_params: dict[str, str], trials: list[TrialRecord]) -> tuple[str, ...]:
    """The spec's search.space, else the parent's `search.knobs` param, else the known knobs that vary."""
    if space:
        return tuple(space)
    listed = parent_params.get(schema.PARAM_KNOBS, "")
    if listed:
        return tuple(k for k in listed.split(",") if k)
    varied = []
    for knob in schema.KNOWN_KNOBS:
        values = {t.params[knob] for t in trials if knob in t.params}
        if len(values) > 1:
            varied.append(knob)
    return tuple(varied)
