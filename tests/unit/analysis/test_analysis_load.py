"""analysis.load finds a study through study.lookup (its parent run in any experiment, filter values
quoted there) in a real SQLite MLflow, and says in one line what is missing."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.unit.analysis import reuse_synthetic as rs
from thoraxmae.analysis.errors import ReportError
from thoraxmae.analysis.load import load_study
from thoraxmae.study import schema


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One database for the module (creating MLflow's tables takes seconds); each test its own study."""
    root = tmp_path_factory.mktemp("load")
    return f"sqlite:///{root / 'mlflow.db'}", root


@pytest.fixture()
def uri(store):
    return store[0]


@pytest.fixture()
def root(store):
    return store[1]


def test_a_study_logged_in_another_experiment_is_found_by_its_tag(uri, root):
    spec = rs.spec("tagged") | {"tracking": {"experiment": "elsewhere"}}
    written = rs.write(uri, root, "elsewhere", [], [rs.Trial("a", None, 0.7)], study_spec=spec)
    client = MlflowClient(uri)
    client.set_tag(written.parent_run_id, schema.TAG_STUDY, "tagged")
    client.set_tag(written.trial_runs["a"], schema.TAG_STUDY, "tagged")
    study = load_study("tagged", uri)
    assert study.experiment_id == written.experiment_id and study.parent_run_id == written.parent_run_id
    assert [t.trial_id for t in study.trials] == ["a"] and study.spec["tracking"]["experiment"] == "elsewhere"


def test_trials_without_the_parent_tag_are_found_by_the_study_tag(uri, root):
    written = rs.write(uri, root, "orphans", [], [rs.Trial("a", None, 0.7), rs.Trial("b", None, 0.6)])
    client = MlflowClient(uri)
    for run_id in written.trial_runs.values():
        client.delete_tag(run_id, schema.TAG_PARENT)
    study = load_study("orphans", uri)
    assert (sorted(t.trial_id for t in study.trials) == ["a", "b"]
            and study.parent_run_id == written.parent_run_id)


def test_a_deleted_experiment_names_the_restore_command(uri, root):
    written = rs.write(uri, root, "gone", [], [rs.Trial("a", None, 0.7)])
    MlflowClient(uri).delete_experiment(written.experiment_id)
    with pytest.raises(ReportError, match=rf"study `gone`: its MLflow experiment {written.experiment_id} is "
                                          r"deleted "
                                          r"\(tracking URI sqlite:///.*\); restore it with `mlflow "
                                          r"experiments "
                                          rf"restore --experiment-id {written.experiment_id}`"):
        load_study("gone", uri)


def test_lookup_errors_are_report_errors_naming_the_study(uri, root):
    with pytest.raises(ReportError, match=r"^study `x`: tracking URI bogus://x: unknown scheme `bogus://`"):
        load_study("x", "bogus://x")
    with pytest.raises(ReportError, match=r"^study name 'a b': expected letters, digits"):
        load_study("a b", uri)
