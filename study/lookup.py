"""Finding a study again by name: its resolved spec (for `study resume`) and its progress (`study status`).

The spec comes from the study's MLflow parent run (`spec.yaml`), or from Tune's storage folder
(`<storage_path>/<name>/thoraxmae_spec.yaml`) when a storage path is given. Progress is read from
MLflow only, so `study status` needs neither Ray nor the storage folder.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec import StudySpec, load_spec

SPEC_FILE = "thoraxmae_spec.yaml"  # also written by study.tune.run_study


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def find_parent_run(name: str, tracking_uri: str):
    """The study's parent run (the first one if the name was used twice); SpecError when absent."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDY}' and "
                                                 f"tags.`{schema.TAG_STUDY}` = '{name}'",
                              order_by=["attributes.start_time ASC"]) if ids else []
    if not runs:
        raise SpecError(f"study `{name}`: no such study in MLflow at {tracking_uri} "
                        f"(give --tracking-uri, or --storage-path to read the spec from Tune's folder)")
    return client, runs[0]


def locate_spec(name: str, tracking_uri: str | None = None, storage_path: Path | None = None) -> StudySpec:
    if storage_path is not None:
        path = Path(storage_path) / name / SPEC_FILE
        if not path.is_file():
            raise SpecError(f"study `{name}`: {path} not found (is --storage-path the spec's storage_path?)")
        return load_spec(path)
    client, parent = find_parent_run(name, tracking_uri or default_tracking_uri())
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(parent.info.run_id, schema.ARTIFACT_SPEC, tmp)
        return load_spec(local)


@dataclass
class StudyStatus:
    name: str
    stage: str
    metric: str
    mode: str
    num_samples: int
    parent_status: str
    counts: dict[str, int] = field(default_factory=dict)
    best: tuple[str, float, dict[str, str]] | None = None  # trial id, metric value, searched knobs

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED,
                                                  schema.STATUS_FAILED))


def study_status(name: str, tracking_uri: str | None = None) -> StudyStatus:
    """Trials by status and the best trial so far (by the last reported value of the study's metric)."""
    client, parent = find_parent_run(name, tracking_uri or default_tracking_uri())
    params = parent.data.params
    metric = params.get("search.metric", schema.M_VAL_MAUC)
    mode = params.get("search.mode", "max")
    knobs = [k for k in params.get("search.knobs", "").split(",") if k]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{schema.TAG_PARENT}` = '{parent.info.run_id}'")
    status = StudyStatus(name=name, stage=parent.data.tags.get(schema.TAG_STAGE, "?"), metric=metric, mode=mode,
                         num_samples=int(params.get("search.num_samples", 0)), parent_status=parent.info.status,
                         counts=dict.fromkeys(schema.TRIAL_STATUSES, 0))
    sign = 1 if mode == "max" else -1
    for run in children:
        st = run.data.tags.get(schema.TAG_STATUS, schema.STATUS_RUNNING)
        status.counts[st] = status.counts.get(st, 0) + 1
        value = run.data.metrics.get(metric)
        if value is None or not math.isfinite(value) or st == schema.STATUS_FAILED:
            continue
        if status.best is None or sign * value > sign * status.best[1]:
            chosen = {k: run.data.params.get(k, "?") for k in knobs}
            status.best = (run.data.tags.get(schema.TAG_TRIAL_ID, "?"), value, chosen)
    return status
