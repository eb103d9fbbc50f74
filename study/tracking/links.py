"""Links into the MLflow UI: each study's trials table.

MLflow 3 opens an experiment on its GenAI overview; the trials are on `#/experiments/<id>/runs`. That page
keeps its filter and sort in the URL (`searchFilter`, `orderByKey`, `orderByAsc`), so a link can show only
the trials, best first. It keeps the shown columns in the browser instead (not the URL): the searched
knobs and the metric are in the table's column picker.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from thoraxmae.study import schema
from thoraxmae.study.tracking.lookup import filter_value, find_parent, search_all

DEFAULT_METRIC, DEFAULT_MODE = schema.M_VAL_MAUC, "max"


@dataclass(frozen=True)
class StudyLink:
    """Where a study's trials live and how they are ranked."""

    name: str
    experiment_id: str
    metric: str
    mode: str  # max | min

    def url(self, base: str) -> str:
        return trials_url(base, self.experiment_id, self.metric, self.mode)


def trials_url(base: str, experiment_id: str, metric: str, mode: str) -> str:
    """The runs page of `experiment_id` on the MLflow UI at `base`: trial runs only, best `metric` first."""
    query = urlencode({"searchFilter": f"tags.`{schema.TAG_ROLE}` = {filter_value(schema.ROLE_TRIAL)}",
                       "orderByKey": f"metrics.`{metric}`",
                       "orderByAsc": "true" if mode == "min" else "false"},
                      quote_via=quote)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def is_server(uri: str | None) -> bool:
    """True for a tracking server's URI, whose address also serves the UI."""
    return bool(uri) and uri.startswith(("http://", "https://"))


def _link(run) -> StudyLink:
    params = run.data.params
    return StudyLink(run.data.tags.get(schema.TAG_STUDY, run.info.run_name), run.info.experiment_id,
                     params.get("search.metric", DEFAULT_METRIC), params.get("search.mode", DEFAULT_MODE))


def study_links(client) -> list[StudyLink]:
    """One link per study in the tracking store (its parent run), in the order the studies started."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    return [_link(run) for run in search_all(client, ids, f"tags.`{schema.TAG_ROLE}` = "
                                                          f"{filter_value(schema.ROLE_STUDY)}")]


def server_trials_url(uri: str | None, name: str) -> str | None:
    """The trials link of study `name` when `uri` is a tracking server (None otherwise, or before the
    study's parent run exists)."""
    if not is_server(uri):
        return None
    from mlflow import MlflowClient

    parent = find_parent(MlflowClient(tracking_uri=uri), name)
    return _link(parent).url(uri) if parent is not None else None
