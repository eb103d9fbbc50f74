"""Finding a study by name in a real SQLite MLflow (no Ray): quoting, URI checks, identity, status, remove."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import write_store_manifest
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.lookup import (
    TUNER_FILE,
    check_new_study,
    filter_value,
    find_study,
    has_tune_state,
    study_status,
    tagged_runs,
)
from thoraxmae.study.tracking.remove import find_leftovers, remove_study
from thoraxmae.study.tracking.uri import check_tracking_uri
from thoraxmae.study.tracking.writer import StudyTracker


def _spec(tmp_path: Path, name: str, uri: str, stage: str = "finetune", storage: str = "studies"):
    raw = {"name": name, "stage": stage, "data": {"store": str(write_store_manifest(tmp_path / "store"))},
           "model": {"name": "vit_tiny_test"},
           "search": {"num_samples": 2,
                      "space": {f"{'pretrain' if stage == 'pretrain' else 'finetune'}.blr": {
               "type": "float", "low": 1e-5, "high": 1e-3, "log": True}}},
           "tracking": {"uri": uri}, "storage_path": str(tmp_path / storage)}
    raw[stage] = {"epochs": 3, "warmup_epochs": 1}
    return with_defaults(parse_spec(raw))


def _study(spec, histories: dict[str, tuple[str, list[float]]]) -> StudyTracker:
    """A study with one trial per entry: trial id -> (status, metric history by epoch)."""
    tracker = StudyTracker(spec)
    tracker.start_study()
    for trial_id, (status, values) in histories.items():
        run = tracker.start_trial(trial_id, {"finetune.blr": "0.001"})
        for epoch, value in enumerate(values, start=1):
            tracker.log_epoch(run, {spec.metric: value}, epoch)
        tracker.end_trial(run, status, error="Traceback ...\nValueError: batch_size=5000 > 240 images"
                          if status == schema.STATUS_FAILED else None)
    return tracker


@pytest.fixture()
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize(("value", "quoted"), [
    ("plain", "'plain'"),
    ("x' or tags.a = 'b", "\"x' or tags.a = 'b\""),
    ('dq"x', "'dq\"x'"),
])
def test_filter_value_quotes_what_mlflow_can_match(value, quoted):
    assert filter_value(value) == quoted


def test_filter_value_refuses_both_quotes():
    with pytest.raises(SpecError, match="a value with both ' and \" cannot be written in an MLflow search "
                                        "filter"):
        filter_value("a'b\"c")


def test_quoted_values_match_exactly_in_mlflow(uri):
    client = MlflowClient(uri)
    exp = client.create_experiment("q")
    for name in ("x' or tags.a = 'b", "x", 'dq"x'):
        client.create_run(exp, tags={schema.TAG_ROLE: schema.ROLE_STUDY, schema.TAG_STUDY: name})
    for name in ("x' or tags.a = 'b", "x", 'dq"x'):
        assert [r.data.tags[schema.TAG_STUDY] for r in tagged_runs(client, name, schema.ROLE_STUDY)] == [name]


@pytest.mark.parametrize(("make_uri", "write", "message"), [
    (lambda t: f"file://{t}/mlruns", False, r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    (lambda t: str(t / "mlruns"), True, r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    (lambda t: "bogus://x", False, r"unknown scheme `bogus://`"),
    (lambda t: "sqlite://", True, r"expected sqlite:///PATH/mlflow.db"),
    (lambda t: f"sqlite:///{t}/none/mlflow.db", False, (r"no MLflow database at .*/none/mlflow.db \(nothing "
                                                       r"created")),
    (lambda t: f"sqlite:///{t}", True, r"is a folder, not a database file"),
    (lambda t: "sqlite:////proc/thoraxmae/m.db", True, (r"cannot create /proc/thoraxmae/m.db: /proc is not "
                                                       r"writable")),
    (lambda t: "http://127.0.0.1:9", False, r"no MLflow server answers"),
])
def test_unusable_tracking_uris_are_one_line_errors(tmp_path, make_uri, write, message):
    uri = make_uri(tmp_path)
    with pytest.raises(SpecError, match=message) as err:
        check_tracking_uri(uri, write=write)
    assert str(err.value).startswith(f"tracking URI {uri}: ") and "\n" not in str(err.value)
    assert sorted(tmp_path.iterdir()) == []  # nothing created


def test_a_file_that_is_not_an_mlflow_database_is_named(tmp_path):
    garbage = tmp_path / "mlflow.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(SpecError, match=r"mlflow.db cannot be read as an SQLite database \(file is not a "
                                        r"database\)"):
        check_tracking_uri(f"sqlite:///{garbage}", write=False)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(SpecError, match=r"other.db is not an MLflow database \(no experiments table\)"):
        check_tracking_uri(f"sqlite:///{other}", write=False)
    check_tracking_uri(f"sqlite:///{other}", write=True)  # a new study may start in an empty database


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_database_can_be_read_not_written(tmp_path, uri):
    MlflowClient(uri).search_experiments()
    (tmp_path / "mlflow.db").chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        check_tracking_uri(uri, write=False)
        with pytest.raises(SpecError, match="cannot be written"):
            check_tracking_uri(uri, write=True)
    finally:
        tmp_path.chmod(0o755)


def test_status_shows_the_best_value_over_every_epoch_and_never_a_failed_trial(tmp_path, uri):
    spec = _spec(tmp_path, "best", uri)
    _study(spec, {"t1": (schema.STATUS_COMPLETED, [0.50, 0.5753, 0.5719]),  # its last value is not its best
                  "t2": (schema.STATUS_PRUNED, [0.55]),
                  "t3": (schema.STATUS_FAILED, [0.99])})
    st = study_status("best", uri)
    assert (st.metric, st.mode) == ("val/mauc", "max")
    assert st.best == ("t1", 0.5753, {"finetune.blr": "0.001"})
    assert st.first_error == ("t3", "ValueError: batch_size=5000 > 240 images")
    assert st.counts == {"completed": 1, "pruned": 1, "failed": 1, "running": 0}


def test_a_pretraining_study_is_scored_by_its_own_metric_and_mode(tmp_path, uri):
    spec = _spec(tmp_path, "pre", uri, stage="pretrain")
    _study(spec,
           {"a": (schema.STATUS_COMPLETED, [0.9, 0.4, 0.6]), "b": (schema.STATUS_COMPLETED, [0.8, 0.5])})
    st = study_status("pre", uri)
    assert (st.metric, st.mode) == ("pretrain/loss", "min") and st.best[:2] == ("a", 0.4)


def test_find_study_reads_parent_and_trials_without_creating_anything(tmp_path, uri):
    spec = _spec(tmp_path, "found", uri)
    _study(spec, {"t1": (schema.STATUS_COMPLETED, [0.6]), "t2": (schema.STATUS_PRUNED, [0.5])})
    runs = find_study("found", uri)
    assert runs.parent.data.tags[schema.TAG_ROLE] == schema.ROLE_STUDY
    assert sorted(r.data.tags[schema.TAG_TRIAL_ID] for r in runs.trials) == ["t1", "t2"]
    with pytest.raises(SpecError, match=r"study `other`: no such study in MLflow at sqlite:///"):
        find_study("other", uri)
    with pytest.raises(SpecError, match=r"study name \"x' or tags.a = 'b\": expected letters, digits"):
        find_study("x' or tags.a = 'b", uri)


def test_a_name_is_taken_whatever_the_storage_path(tmp_path, uri):
    _study(_spec(tmp_path, "taken", uri), {"t1": (schema.STATUS_COMPLETED, [0.6])})
    again = _spec(tmp_path, "taken", uri, storage="elsewhere")
    with pytest.raises(SpecError,
                       match=r"name: study `taken` already exists in sqlite:///.*\(parent run \w+\); "
                                        r"continue it with `thoraxmae study resume taken --tracking-uri "
                                        r"sqlite:///.*`, "
                                        r"delete it with `thoraxmae study remove taken --tracking-uri .* "
                                        r"--yes`"):
        check_new_study(again)
    check_new_study(_spec(tmp_path, "free", uri))


def test_a_failed_start_is_named_with_the_commands_that_clear_it(tmp_path, uri):
    spec = _spec(tmp_path, "half", uri)
    folder = spec.storage_path / "half"
    folder.mkdir(parents=True)
    (folder / TUNER_FILE).write_bytes(b"")
    with pytest.raises(SpecError, match=r"study `half` has a Tune folder .*/studies/half but no parent run "
                                        r"in .*; "
                                        r"resume it with `thoraxmae study resume half --storage-path "
                                        r".*/studies` or "
                                        r"delete it with `thoraxmae study remove half"):
        check_new_study(spec)


def test_a_deleted_experiment_is_named_before_ray_starts(tmp_path, uri):
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(SpecError, match=r"tracking.experiment: experiment `gone` is deleted .*mlflow "
                                        r"experiments "
                                        r"restore --experiment-id"):
        check_new_study(_spec(tmp_path, "gone", uri))


def test_remove_deletes_runs_and_tune_folder_and_frees_the_name(tmp_path, uri):
    spec = _spec(tmp_path, "gone", uri)
    _study(spec, {"t1": (schema.STATUS_COMPLETED, [0.6]), "t2": (schema.STATUS_FAILED, [0.5])})
    folder = spec.storage_path / "gone"
    folder.mkdir(parents=True)
    (folder / TUNER_FILE).write_bytes(b"")
    confirm = spec.storage_path / "gone-confirm"  # its finished confirmation
    confirm.mkdir()
    (confirm / TUNER_FILE).write_bytes(b"")
    _study(_spec(tmp_path, "kept", uri), {"k1": (schema.STATUS_COMPLETED, [0.7])})

    found = find_leftovers("gone", uri)  # the Tune folders come from the parent run's spec
    assert len(found.parent_ids) == 1 and len(found.run_ids) == 3
    assert [str(f) for f in found.folders] == [str(folder), str(confirm)]
    remove_study(found)
    assert not folder.exists() and not confirm.exists()
    # a new study of the same name starts clean: nothing for its confirmation to resume
    assert not has_tune_state(StudyStorage(spec.storage_path).confirm("gone"))
    with pytest.raises(SpecError, match="no such study"):
        find_study("gone", uri)
    assert len(find_study("kept", uri).trials) == 1  # another study is untouched
    check_new_study(spec)  # the name is free again
    with pytest.raises(SpecError, match=r"study `gone`: nothing to remove: no runs of it in MLflow at .* and "
                                        r"no "
                                        r"Tune folder at"):
        find_leftovers("gone", uri, spec.storage_path)


def test_remove_keeps_a_pre_training_another_study_fine_tuned_from(tmp_path, uri):
    mine = _study(_spec(tmp_path, "mine", uri), {"t1": (schema.STATUS_COMPLETED, [0.6])})
    other = _study(_spec(tmp_path, "other", uri), {"o1": (schema.STATUS_COMPLETED, [0.7])})
    client = mine.client
    child = {schema.TAG_PARENT: mine.parent_id, schema.TAG_STUDY: "mine"}
    shared = client.create_run(mine.experiment_id(),
                               tags={**child, schema.TAG_ROLE: schema.ROLE_PRETRAIN}).info.run_id
    alone = client.create_run(mine.experiment_id(),
                              tags={**child, schema.TAG_ROLE: schema.ROLE_PRETRAIN}).info.run_id
    confirm = client.create_run(mine.experiment_id(),
                                tags={**child, schema.TAG_ROLE: schema.ROLE_CONFIRM}).info.run_id
    client.set_tag(other.find_trial("o1"), schema.TAG_PRETRAIN_RUN, shared)  # `other` fine-tuned from it

    found = find_leftovers("mine", uri)
    assert {alone, confirm} <= set(found.run_ids) and shared not in found.run_ids and len(found.run_ids) == 4
    remove_study(found)
    assert client.get_run(shared).info.lifecycle_stage == "active"
    assert client.get_run(confirm).info.lifecycle_stage == "deleted"


def test_remove_never_deletes_a_folder_that_is_not_a_study(tmp_path, uri):
    (tmp_path / "studies" / "mine").mkdir(parents=True)
    (tmp_path / "studies" / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(SpecError, match=r"holds neither Tune state nor thoraxmae_spec.yaml; not a study "
                                        r"folder"):
        find_leftovers("mine", uri, tmp_path / "studies")


def test_the_lookup_is_ray_free_and_light():
    """analysis (Ray-free) reads studies through it: importing it loads neither Ray, MLflow nor torch."""
    import subprocess
    import sys

    code = ("import sys, thoraxmae.study.tracking.lookup, thoraxmae.study.tracking.remove; "
            "print(sorted(m for m in ('ray', 'mlflow', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120)
    assert done.stdout.strip() == "[]"
