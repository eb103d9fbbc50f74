"""`thoraxmae study remove NAME`: delete a study, or what a start that failed left behind.

What belongs to study NAME: its parent run and every child of it in the tracking store (trials,
confirmation runs, its registered pre-trainings unless another study fine-tuned from one), soft-deleted
as the MLflow UI deletes runs (`mlflow gc` frees their artifacts; the experiment stays and may be
reused), and its Tune folder `<storage_path>/<NAME>` (deleted, local or on object storage), whose storage
path is `--storage-path` or the one in the parent run's spec; the shared pre-training registry of the
storage stays. A folder is only deleted when it is a study folder (it holds Tune's state or the study's
spec), never an arbitrary one, and not while the study's driver is alive (study.driver: a fresh heartbeat).
Nothing is deleted without `yes`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema
from thoraxmae.study.driver import read_record, verdict
from thoraxmae.study.errors import SpecError
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.lookup import (
    SPEC_FILE,
    StudyRuns,
    check_study_name,
    filter_value,
    find_parent,
    has_tune_state,
    read_spec,
    search_all,
    study_dir,
    tagged_runs,
)
from thoraxmae.study.tracking.uri import client_for, mlflow_errors, sqlite_path

log = logging.getLogger(__name__)


@dataclass
class Leftovers:
    """What `remove_study` deletes: MLflow run ids (parent runs first) and the study's Tune folders (its
    own and its confirmation's: study.storage.StudyStorage.of_study)."""

    name: str
    uri: str
    run_ids: list[str] = field(default_factory=list)
    parent_ids: list[str] = field(default_factory=list)
    folders: list[Location] = field(default_factory=list)  # local or on object storage

    def describe(self) -> list[str]:
        lines = []
        if self.run_ids:
            lines.append(f"MLflow ({self.uri}): {len(self.parent_ids)} parent run(s) "
                         f"{', '.join(self.parent_ids) or '-'} and "
                         f"{len(self.run_ids) - len(self.parent_ids)} other run(s) (soft-deleted; `mlflow gc "
                         f"--backend-store-uri {self.uri}` frees their artifacts)")
        lines += [f"Tune folder: {folder} (deleted)" for folder in self.folders]
        return lines


def find_leftovers(name: str, uri: str, storage_path: Path | str | None = None) -> Leftovers:
    """Everything of study `name` in `uri` and its Tune folders; SpecError when there is nothing."""
    check_study_name(name)
    found = Leftovers(name, uri)
    path = sqlite_path(uri)
    if path is None or path.exists():  # no database: nothing in MLflow (and nothing is created)
        client = client_for(uri, write=True)
        with mlflow_errors(uri):
            parents = tagged_runs(client, name, schema.ROLE_STUDY)
            runs = tagged_runs(client, name, schema.ROLE_TRIAL)
            for parent in parents:
                runs += [r for r in _children(client, parent) if not _used_elsewhere(client, r, name)]
            found.parent_ids = [r.info.run_id for r in parents]
            found.run_ids = list(dict.fromkeys(found.parent_ids + [r.info.run_id for r in runs]))
            parent = find_parent(client, name)
        if storage_path is None and parent is not None:
            storage_path = _spec_storage(StudyRuns(name, uri, client, parent))
    if storage_path is not None:
        storage = StudyStorage(storage_path)
        # a study whose driver beats is not removed
        verdict(name, read_record(storage.driver(name)), force=True)
        for folder in storage.of_study(name):
            if not folder.is_dir():
                continue
            marked = (has_tune_state(folder)
                      or (folder == storage.study(name) and (folder / SPEC_FILE).is_file()))
            if not marked:
                raise SpecError(f"study `{name}`: {folder} holds neither Tune state nor {SPEC_FILE}; "
                                f"not a study folder, not deleted")
            found.folders.append(folder)
    if not found.run_ids and not found.folders:
        where = f" and no Tune folder at {study_dir(storage_path, name)}" if storage_path is not None else \
            " (give --storage-path to find its Tune folder)"
        raise SpecError(f"study `{name}`: nothing to remove: no runs of it in MLflow at {uri}{where}")
    return found


def _children(client, parent) -> list:
    """Every run under a parent run: trials, confirmation runs, registered pre-trainings."""
    flt = f"tags.`{schema.TAG_PARENT}` = {filter_value(parent.info.run_id)}"
    return search_all(client, [parent.info.experiment_id], flt)


def _used_elsewhere(client, run, name: str) -> bool:
    """A registered pre-training another study's runs fine-tuned from (pretrain_registry): it stays."""
    if run.data.tags.get(schema.TAG_ROLE) != schema.ROLE_PRETRAIN:
        return False
    ids = [e.experiment_id for e in client.search_experiments()]
    users = search_all(client, ids, f"tags.`{schema.TAG_PRETRAIN_RUN}` = {filter_value(run.info.run_id)}")
    return any(u.data.tags.get(schema.TAG_STUDY) != name for u in users)


def _spec_storage(runs: StudyRuns) -> Path | str | None:
    try:
        return read_spec(runs).storage_path
    except SpecError as exc:  # a half-written parent run: its runs can still go
        log.warning("study %s: spec not readable (%s); give --storage-path to remove its Tune "
                    "folder", runs.name, exc)
        return None


def remove_study(found: Leftovers) -> None:
    """Delete what `find_leftovers` found: the runs (soft delete), then the Tune folders."""
    if found.run_ids:
        client = client_for(found.uri, write=True)
        with mlflow_errors(found.uri):
            for run_id in found.run_ids:
                client.delete_run(run_id)
    for folder in found.folders:
        folder.rmtree()
