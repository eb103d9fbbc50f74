"""Finding a study by name in its tracking store, without Ray: `study status`, `resume`, `remove` and
`report`.

A study's identity is its name in its tracking store: one parent run tagged `thoraxmae.role=study`,
`thoraxmae.study=NAME` (docs/mlflow-schema.md) in any experiment there, whatever its storage path.
`find_study` returns that parent run and its trial runs; every MLflow filter value goes through
`filter_value`. Read-only lookups create nothing: a missing SQLite file is an error, never a new
empty database (study.tracking.uri checks the URI before any MLflow client starts).
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thoraxmae.datasets.storage import Location, absolute
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.storage import DRIVER_FILE, StudyStorage
from thoraxmae.study.tracking.uri import (
    check_tracking_uri,
    client_for,
    default_tracking_uri,
    mlflow_errors,
    sqlite_path,
)

if TYPE_CHECKING:
    from thoraxmae.study.spec.model import StudySpec

log = logging.getLogger(__name__)

SPEC_FILE = "thoraxmae_spec.yaml"  # the resolved spec in Tune's folder, written by study.run.tune.run_study


def filter_value(value: str) -> str:
    """`value` quoted for an MLflow search filter. MLflow's filter grammar has no escape character: a
    value with a single quote is written in double quotes, and one with both kinds cannot be matched."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SpecError(f"{value!r}: a value with both ' and \" cannot be written in an MLflow search filter")


def check_study_name(name: str) -> None:
    if not schema.STUDY_NAME.fullmatch(name) or len(name) > 100:
        raise SpecError(f"study name {name!r}: expected letters, digits, `_`, `.` and `-` "
                        f"(starting with a letter or digit, at most 100 characters)")


def study_dir(storage_path: Location | Path | str, name: str) -> Location:
    """Tune's folder of a study, local or on object storage (study.storage)."""
    return StudyStorage(storage_path).study(name)


def storage_arg(text: str) -> Path | str:
    """A `--storage-path` argument as a spec holds it: an object-store URI as given, a folder absolute."""
    return absolute(text)


# --- the study's runs ----------------------------------------------------------------------------
@dataclass
class StudyRuns:
    """A study's parent run and its trial runs (one per trial id) as MLflow holds them."""

    name: str
    uri: str
    client: Any
    parent: Any  # mlflow.entities.Run
    trials: list = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.parent.data.params)


def search_all(client, experiment_ids: list[str], flt: str) -> list:
    """Every active run matching `flt`, oldest first (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=flt, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def tagged_runs(client, name: str, role: str, experiment_ids: list[str] | None = None) -> list:
    """The runs tagged with study `name` and `role` (study.schema ROLE_*), in any active experiment."""
    ids = (experiment_ids if experiment_ids is not None
           else [e.experiment_id for e in client.search_experiments()])
    if not ids:
        return []
    return search_all(client, ids, f"tags.`{schema.TAG_ROLE}` = {filter_value(role)} and "
                                   f"tags.`{schema.TAG_STUDY}` = {filter_value(name)}")


def find_parent(client, name: str):
    """The study's parent run in any experiment (the oldest if the name was used twice), or None."""
    runs = tagged_runs(client, name, schema.ROLE_STUDY)
    if len(runs) > 1:
        log.warning("study %s has %d parent runs; using the first (%s)", name, len(runs), runs[0].info.run_id)
    return runs[0] if runs else None


def trial_runs(client, parent) -> list:
    """The trial runs of a parent run, one per trial id (the latest if a trial was logged twice)."""
    flt = (f"tags.`{schema.TAG_ROLE}` = {filter_value(schema.ROLE_TRIAL)} and "
           f"tags.`{schema.TAG_PARENT}` = {filter_value(parent.info.run_id)}")
    by_trial: dict[str, Any] = {}
    for run in search_all(client, [parent.info.experiment_id], flt):
        by_trial[run.data.tags.get(schema.TAG_TRIAL_ID, run.info.run_id)] = run
    return list(by_trial.values())


def find_study(name: str, tracking_uri: str | None = None, *, trials: bool = True,
               write: bool = False) -> StudyRuns:
    """Study `name`'s parent run (and its trial runs) in its tracking store; SpecError when absent."""
    uri = tracking_uri or default_tracking_uri()
    check_study_name(name)
    client = client_for(uri, write=write)
    with mlflow_errors(uri):
        parent = find_parent(client, name)
        if parent is None:
            raise SpecError(f"study `{name}`: no such study in MLflow at {uri} (give --tracking-uri, or "
                            f"--storage-path to read the spec from Tune's folder)")
        return StudyRuns(name, uri, client, parent, trial_runs(client, parent) if trials else [])


def read_spec(runs: StudyRuns) -> StudySpec:
    """The study's resolved spec, from its parent run's spec.yaml artifact."""
    from thoraxmae.study.spec.load import load_spec

    with mlflow_errors(runs.uri), tempfile.TemporaryDirectory() as tmp:
        local = runs.client.download_artifacts(runs.parent.info.run_id, schema.ARTIFACT_SPEC, tmp)
        return load_spec(local)


def locate_spec(name: str, tracking_uri: str | None = None,
                storage_path: Path | str | None = None) -> StudySpec:
    """The spec of study `name`: from Tune's folder when `storage_path` is given, else from MLflow."""
    from thoraxmae.study.spec.load import load_spec

    check_study_name(name)
    if storage_path is None:
        return read_spec(find_study(name, tracking_uri, trials=False))
    loc = study_dir(storage_path, name) / SPEC_FILE
    if not loc.is_file():
        raise SpecError(f"study `{name}`: {loc} not found (is --storage-path the spec's storage_path?)")
    if loc.is_local:
        return load_spec(loc.path)
    with tempfile.TemporaryDirectory() as tmp:  # load_spec reads a local file (as read_spec's download above)
        local = Path(tmp) / SPEC_FILE
        local.write_bytes(loc.read_bytes())
        try:
            return load_spec(local)
        except SpecError as exc:  # its messages name the URI, not the temporary copy
            raise SpecError(str(exc).replace(str(local), loc.uri)) from None


# --- status --------------------------------------------------------------------------------------
@dataclass
class StudyStatus:
    name: str
    stage: str
    metric: str
    mode: str
    num_samples: int
    parent_status: str
    counts: dict[str, int] = field(default_factory=dict)
    best: tuple[str, float, dict[str, str]] | None = None  # trial id, best metric value, searched knobs
    first_error: tuple[str, str] | None = None  # trial id, the last line of its error

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED,
                                                  schema.STATUS_FAILED))


def objective(stage: str, params: dict[str, str]) -> tuple[str, str]:
    """The study's (metric, mode): the parent run's `search.metric`/`search.mode` params, else the
    spec's defaults for its stage (pretrain/loss, min for a pre-training study; val/mauc, max otherwise)."""
    metric = params.get(schema.PARAM_METRIC) or (schema.M_PRETRAIN_LOSS if stage == "pretrain"
                                                 else schema.M_VAL_MAUC)
    mode = params.get(schema.PARAM_MODE)
    if mode not in ("max", "min"):
        mode = "max" if metric.startswith(("val/", "test/")) else "min"
    return metric, mode


def study_status(name: str, tracking_uri: str | None = None) -> StudyStatus:
    """Trials by status, the best value of the study's metric any non-failed trial reached (by the
    study's mode, over every epoch) and the first failed trial's error."""
    runs = find_study(name, tracking_uri)
    parent, params = runs.parent, runs.params
    stage = parent.data.tags.get(schema.TAG_STAGE, "?")
    metric, mode = objective(stage, params)
    knobs = [k for k in params.get(schema.PARAM_KNOBS, "").split(",") if k]
    status = StudyStatus(name=name, stage=stage, metric=metric, mode=mode,
                         num_samples=int(params.get(schema.PARAM_NUM_SAMPLES, 0)),
                         parent_status=parent.info.status,
                         counts=dict.fromkeys(schema.TRIAL_STATUSES, 0))
    sign = 1 if mode == "max" else -1
    with mlflow_errors(runs.uri):
        for run in runs.trials:
            st = run.data.tags.get(schema.TAG_STATUS, schema.STATUS_RUNNING)
            status.counts[st] = status.counts.get(st, 0) + 1
            trial_id = run.data.tags.get(schema.TAG_TRIAL_ID, "?")
            if st == schema.STATUS_FAILED:
                if status.first_error is None:
                    status.first_error = (trial_id, error_line(run.data.tags.get(schema.TAG_ERROR, "")))
                continue
            values = [m.value for m in runs.client.get_metric_history(run.info.run_id, metric)
                      if math.isfinite(m.value)]
            if not values:
                continue
            value = max(values) if mode == "max" else min(values)
            if status.best is None or sign * value > sign * status.best[1]:
                status.best = (trial_id, value, {k: run.data.params.get(k, "?") for k in knobs})
    return status


def error_line(trace: str) -> str:
    """The line of an error trace that says what went wrong (the last non-empty one)."""
    lines = [line.strip() for line in str(trace).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error recorded"


# --- a new study's name --------------------------------------------------------------------------
TUNER_FILE = "tuner.pkl"  # Tune's state in a study folder (what ray.tune.Tuner.can_restore looks for)


def has_tune_state(folder: Location | Path | str) -> bool:
    return (Location.of(folder) / TUNER_FILE).is_file()


def check_new_study(spec: StudySpec) -> None:
    """Before `study run` starts Ray: the tracking store and the storage are writable, no parent run there
    has the study's name (whatever its storage path) and Tune's folder for it is free. SpecError names the
    commands that resume or remove what is there."""
    check_tracking_uri(spec.tracking.uri, write=True)
    StudyStorage(spec.storage_path).check_writable()
    taken = name_taken(spec)
    if taken:
        raise SpecError(taken)


def name_taken(spec: StudySpec) -> str | None:
    """Why the spec's study name cannot start a new study (a one-line SpecError message), or None."""
    uri, name = spec.tracking.uri, spec.name
    folder = study_dir(spec.storage_path, name)
    parent = experiment = None
    path = sqlite_path(uri)
    if path is None or path.exists():  # a database still to be created holds no study
        from mlflow import MlflowClient

        with mlflow_errors(uri):
            client = MlflowClient(tracking_uri=uri)
            parent = find_parent(client, name)
            experiment = client.get_experiment_by_name(spec.experiment)
    # finds the Tune folder from the parent's spec
    remove = f"thoraxmae study remove {name} --tracking-uri {uri}"
    if parent is not None:
        return (f"name: study `{name}` already exists in {uri} (parent run {parent.info.run_id}); continue "
                f"it with `thoraxmae study resume {name} --tracking-uri {uri}`, delete it with `{remove} "
                "--yes`, or choose another name (--set name=...)")
    remove += f" --storage-path {spec.storage_path} --yes"
    # a driver's claim alone: free
    if folder.is_dir() and any(child.name != DRIVER_FILE for child in folder.iterdir()):
        again = (f"resume it with `thoraxmae study resume {name} --storage-path {spec.storage_path}` or "
                 if has_tune_state(folder) else "")
        return (f"name: study `{name}` has a Tune folder {folder} but no parent run in {uri} (a start that "
                f"failed); {again}delete it with `{remove}`, or choose another name (--set name=...)")
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        return (f"tracking.experiment: experiment `{spec.experiment}` is deleted in {uri}; restore it with "
                f"`mlflow experiments restore --experiment-id {experiment.experiment_id}` or choose another "
                f"(--set tracking.experiment=...)")
    return None


def check_resumable(spec: StudySpec, from_last_good: bool = False) -> None:
    """Before `study resume` starts Ray: the storage takes writes and Tune's state of the study is where its
    spec says (or, `from_last_good`, a kept copy of it: study.run.tune_state)."""
    storage = StudyStorage(spec.storage_path)
    storage.check_writable()
    folder = study_dir(spec.storage_path, spec.name)
    if spec.search.tournament is not None and (folder / SPEC_FILE).is_file():
        return  # a tournament keeps one Tune experiment per rung under its folder (study/run/tournament.py)
    kept = storage.last_good_state(spec.name)
    if from_last_good and kept.is_file():
        return
    if not has_tune_state(folder) and kept.is_file():
        raise SpecError(f"name: Tune's state of study `{spec.name}` is missing from {folder} (tuner.pkl); a "
                        f"copy is kept in {kept}: resume from it with `thoraxmae study resume {spec.name} "
                        f"--tracking-uri {spec.tracking.uri} --from-last-good`")
    if not has_tune_state(folder):
        raise SpecError(f"name: no Tune state for study `{spec.name}` at {folder} (its start failed, or its "
                        "storage moved: give --storage-path); delete it with `thoraxmae study remove "
                        f"{spec.name} --tracking-uri {spec.tracking.uri} --storage-path {spec.storage_path} "
                        "--yes`")
