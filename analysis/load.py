"""Read one study back from MLflow: the parent run, its spec.yaml and every trial's child run.

Only the run schema of study/schema.py is read (docs/mlflow-schema.md); nothing here needs Ray. The result is
plain records; analysis/tables.py turns them into the tidy tables the rest of the package uses.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thoraxmae.analysis.errors import ReportError
from thoraxmae.study import schema

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what): the CLI draws it, library code never prints
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # as study.spec's `name`
_MLFLOW_STATUS = {"FINISHED": schema.STATUS_COMPLETED, "KILLED": schema.STATUS_PRUNED,
                  "FAILED": schema.STATUS_FAILED, "RUNNING": schema.STATUS_RUNNING,
                  "SCHEDULED": schema.STATUS_RUNNING}


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db` (the same default as the study spec)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


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
    confirm: list[ConfirmRecord] = field(default_factory=list)  # confirmation runs (none: the recipe is exploratory)

    @property
    def scored_phase(self) -> str:
        return "pretrain" if self.stage == "pretrain" else "finetune"


def load_study(name: str, tracking_uri: str | None = None, progress: Progress | None = None) -> StudyRecord:
    """Every trial of study `name` with its params, latest metrics and per-epoch objective curve.

    Raises ReportError naming the study and the tracking URI when the store, the experiment or its
    trial runs are missing.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or default_tracking_uri()
    if not STUDY_NAME.fullmatch(name):
        raise ReportError(f"study `{name}`: not a study name (letters, digits, `_`, `.`, `-`; tracking URI {uri})")
    _check_store_exists(name, uri)
    _check_uri(name, uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment_id = _find_experiment(client, name, uri)
        parent = _find_parent(client, experiment_id, name)
        parent_id = parent.info.run_id if parent is not None else None
        spec = _read_spec(client, parent_id) if parent_id else None
        parent_params = parent.data.params if parent is not None else {}
        runs = _trial_runs(client, experiment_id, name, parent_id)
        confirm_runs = _role_runs(client, experiment_id, name, parent_id, schema.ROLE_CONFIRM)
    except MlflowException as exc:
        raise ReportError(f"study `{name}`: MLflow at {uri} could not be read: {exc.message}") from exc
    if not runs:
        raise ReportError(f"study `{name}` has no trial runs in experiment {experiment_id} "
                          f"(tracking URI {uri}); has the study started?")
    stage = _stage(spec, parent)
    metric, mode = objective_of(spec, parent_params, stage)
    space = dict(((spec or {}).get("search") or {}).get("space") or {})
    trials = [_record(client, run, metric, i, len(runs), progress) for i, run in enumerate(runs)]
    knobs = _searched_knobs(space, parent_params, trials)
    confirm = [_confirm_record(client, run, metric) for run in confirm_runs]
    return StudyRecord(name=name, tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent_id,
                       spec=spec, stage=stage, metric=metric, mode=mode, knobs=knobs, space=space, trials=trials,
                       confirm=confirm)


def objective_of(spec: dict | None, parent_params: dict[str, str], stage: str) -> tuple[str, str]:
    """(metric, mode): the spec's search.metric/mode, else the parent's params, else the defaults
    (val/mauc max; pretrain/loss min for a pre-training study)."""
    search = (spec or {}).get("search") or {}
    metric = search.get("metric") or parent_params.get("search.metric")
    if not metric:
        metric = schema.M_PRETRAIN_LOSS if stage == "pretrain" else schema.M_VAL_MAUC
    mode = search.get("mode") or parent_params.get("search.mode")
    if mode not in ("max", "min"):
        mode = "max" if metric.startswith(("val/", "test/")) else "min"
    return metric, mode


def _check_uri(name: str, uri: str) -> None:
    """file://, bogus://, an unreadable SQLite file or a server that does not answer: one line, nothing created."""
    from thoraxmae.study.errors import SpecError
    from thoraxmae.study.tracking_uri import check_tracking_uri

    try:
        check_tracking_uri(uri, write=False)
    except SpecError as exc:
        raise ReportError(f"study `{name}`: {exc}") from None


def _check_store_exists(name: str, uri: str) -> None:
    """A missing SQLite file would be created empty by MLflow: report it instead."""
    m = re.fullmatch(r"sqlite:///(.+)", uri)
    if m and not Path(m.group(1)).is_file():
        raise ReportError(f"study `{name}`: no MLflow database at {m.group(1)} (tracking URI {uri})")


def _find_experiment(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ReportError(f"study `{name}`: its MLflow experiment {exp.experiment_id} is deleted (tracking URI {uri}); "
                          f"restore it with `mlflow experiments restore --experiment-id {exp.experiment_id}`")
    if exp is not None:
        return exp.experiment_id
    # tracking.experiment may differ from the study name: look for the study's parent run anywhere
    for other in client.search_experiments():
        found = client.search_runs([other.experiment_id], max_results=1,
                                   filter_string=f"tags.`{schema.TAG_STUDY}` = '{name}'")
        if found:
            return other.experiment_id
    raise ReportError(f"study `{name}` not found: no MLflow experiment named `{name}` and no run tagged "
                      f"{schema.TAG_STUDY}={name} (tracking URI {uri})")


def _find_parent(client, experiment_id: str, name: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDY}'",
                              order_by=["attributes.start_time ASC"])
    named = [r for r in runs if r.data.tags.get(schema.TAG_STUDY, name) == name]
    if len(named) > 1:
        log.warning("study %s has %d parent runs; reading the first (%s)", name, len(named), named[0].info.run_id)
    return named[0] if named else None


def _role_runs(client, experiment_id: str, name: str, parent_id: str | None, role: str) -> list:
    """The study's runs of one role: children of the parent run, else (no parent, or runs logged without
    the parent tag) the runs of that role tagged with the study's name (a validated name: no quotes)."""
    where = f"tags.`{schema.TAG_ROLE}` = '{role}'"
    runs = _search_all(client, experiment_id, f"{where} and tags.`{schema.TAG_PARENT}` = '{parent_id}'") \
        if parent_id else []
    if not runs:
        runs = _search_all(client, experiment_id, f"{where} and tags.`{schema.TAG_STUDY}` = '{name}'")
    return runs


def _trial_runs(client, experiment_id: str, name: str, parent_id: str | None) -> list:
    """The study's trial runs, one per trial id."""
    runs = _role_runs(client, experiment_id, name, parent_id, schema.ROLE_TRIAL)
    by_trial: dict[str, Any] = {}  # a restarted driver reuses a trial's run; keep the latest if it did not
    for run in runs:
        by_trial[run.data.tags.get(schema.TAG_TRIAL_ID, run.info.run_id)] = run
    return list(by_trial.values())


def _search_all(client, experiment_id: str, flt: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=flt, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _read_spec(client, parent_id: str) -> dict | None:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent_id, schema.ARTIFACT_SPEC, tmp)
            raw = yaml.safe_load(Path(path).read_text())
        except (MlflowException, OSError, yaml.YAMLError) as exc:
            log.warning("parent run %s: %s not readable (%s); using defaults", parent_id, schema.ARTIFACT_SPEC, exc)
            return None
    return raw if isinstance(raw, dict) else None


def _stage(spec: dict | None, parent) -> str:
    stage = (spec or {}).get("stage")
    if not stage and parent is not None:
        stage = parent.data.tags.get(schema.TAG_STAGE)
    return stage or "finetune"


def _record(client, run, metric: str, i: int, total: int, progress: Progress | None) -> TrialRecord:
    trial_id = run.data.tags.get(schema.TAG_TRIAL_ID, run.info.run_id[:8])
    status = _status(run, f"trial {trial_id}")
    history = _history(client, run, metric)
    if progress is not None:
        progress(i + 1, total, f"trial {trial_id}")
    return TrialRecord(run_id=run.info.run_id, trial_id=trial_id, status=status,
                       start_time=run.info.start_time / 1000 if run.info.start_time else None,
                       end_time=run.info.end_time / 1000 if run.info.end_time else None,
                       params=dict(run.data.params), metrics=dict(run.data.metrics), history=history,
                       error=run.data.tags.get(schema.TAG_ERROR))


def _confirm_record(client, run, metric: str) -> ConfirmRecord:
    tags, params = run.data.tags, dict(run.data.params)
    recipe = tags.get(schema.TAG_RECIPE) or "unlabelled"
    try:
        seed = int(params[schema.PARAM_SEED])
    except (KeyError, ValueError):
        seed = None
    return ConfirmRecord(run_id=run.info.run_id, recipe=recipe, source_run=tags.get(schema.TAG_SOURCE_RUN), seed=seed,
                         status=_status(run, f"confirmation run {run.info.run_id}"),
                         start_time=run.info.start_time / 1000 if run.info.start_time else None,
                         params=params, metrics=dict(run.data.metrics), history=_history(client, run, metric),
                         error=tags.get(schema.TAG_ERROR))


def _status(run, what: str) -> str:
    status = run.data.tags.get(schema.TAG_STATUS) or _MLFLOW_STATUS.get(run.info.status, schema.STATUS_RUNNING)
    if status not in schema.TRIAL_STATUSES:
        log.warning("%s: unknown status %r; treated as running", what, status)
        status = schema.STATUS_RUNNING
    return status


def _history(client, run, metric: str) -> dict[str, list[tuple[int, float]]]:
    return {metric: sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run.info.run_id, metric))}


def _searched_knobs(space: dict, parent_params: dict[str, str], trials: list[TrialRecord]) -> tuple[str, ...]:
    """The spec's search.space, else the parent's `search.knobs` param, else the known knobs that vary."""
    if space:
        return tuple(space)
    listed = parent_params.get("search.knobs", "")
    if listed:
        return tuple(k for k in listed.split(",") if k)
    varied = []
    for knob in schema.KNOWN_KNOBS:
        values = {t.params[knob] for t in trials if knob in t.params}
        if len(values) > 1:
            varied.append(knob)
    return tuple(varied)
