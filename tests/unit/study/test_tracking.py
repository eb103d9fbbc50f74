"""The MLflow run schema writer and reader against a real SQLite backend (no Ray)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import write_store_manifest
from thoraxmae.study import schema
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.lookup import locate_spec, study_status
from thoraxmae.study.tracking.writer import StudyTracker, absolute_lr, schema_metrics, trial_params


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _spec(uri: str, tmp_path, name: str):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    write_store_manifest(store)
    raw = {"name": name, "stage": "finetune", "data": {"store": str(store)},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "finetune": {"epochs": 3, "warmup_epochs": 1, "batch_size": 128},
           "search": {"num_samples": 3, "space": {
               "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 0.9}}},
           "resources": {"workers_per_trial": 8},
           "tracking": {"uri": uri}, "storage_path": str(tmp_path / "studies")}
    return with_defaults(parse_spec(raw))


def test_absolute_lr_matches_the_paper():
    # docs/paper.md: fine-tuning blr 2.5e-4 at total batch 1024 -> lr 1e-3; pre-training 1.5e-4 at 2048 ->
    # 1.2e-3
    assert math.isclose(absolute_lr(2.5e-4, 128, 1, 8), 1e-3)
    assert math.isclose(absolute_lr(1.5e-4, 256, 1, 8), 1.2e-3)


def test_schema_metrics_keeps_only_finite_schema_numbers():
    result = {"val/mauc": 0.7, "val/auc/Hernia": 0.6, "epoch": 2, "training_iteration": 2,
              "phase": "finetune",
              "pretrain/epoch": 3, "pretrain/loss": math.nan, "cost/cpu_hours": 1, "done": False,
              "test/mauc": True}
    assert schema_metrics(result) == {"val/mauc": 0.7, "val/auc/Hernia": 0.6, "cost/cpu_hours": 1.0}


def test_trial_params_hold_every_setting_under_its_spec_path(uri, tmp_path):
    spec = _spec(uri, tmp_path, "params")
    ft = spec.finetune.model_copy(update={"layer_decay": 0.6})
    params = trial_params(spec, {"finetune": ft})
    assert params["finetune.layer_decay"] == "0.6"
    assert params["finetune.drop_path"] == "0.2" and params["model.name"] == "vit_tiny_test"
    assert float(params["finetune.lr"]) == pytest.approx(1e-3)
    assert params["resources.workers_per_trial"] == "8"


def test_parent_and_child_runs_follow_the_schema(uri, tmp_path):
    spec = _spec(uri, tmp_path, "schema")
    tracker = StudyTracker(spec)
    parent = tracker.start_study()
    assert StudyTracker(spec).start_study() == parent  # a resumed study finds its parent again
    # the MLflow UI opens it on its training runs (not the GenAI overview)
    assert tracker.client.get_experiment(tracker.experiment_id()).tags["mlflow.experimentKind"] == \
        "custom_model_development"

    run = tracker.start_trial("t1", {"finetune.layer_decay": "0.6"})
    assert tracker.start_trial("t1", {"finetune.layer_decay": "0.6"}) == run  # restarted trial: same run
    for epoch, (mauc, hernia) in enumerate([(0.6, 0.5), (0.8, 0.9), (0.7, 0.4)], start=1):
        tracker.log_epoch(run, {schema.M_VAL_MAUC: mauc, schema.val_auc("Hernia"): hernia}, epoch)
    tracker.log_epoch(run, {schema.test_auc("Hernia"): 0.85}, 3)
    tracker.log_auc_table(run, schema.M_VAL_MAUC, "max")
    tracker.end_trial(run, schema.STATUS_COMPLETED)
    other = tracker.start_trial("t2", {"finetune.layer_decay": "0.4"})
    tracker.log_epoch(other, {schema.M_VAL_MAUC: 0.9}, 1)
    tracker.end_trial(other, schema.STATUS_PRUNED)
    failed = tracker.start_trial("t3", {"finetune.layer_decay": "0.5"})
    tracker.log_epoch(failed, {schema.M_VAL_MAUC: 0.95}, 1)
    tracker.end_trial(failed, schema.STATUS_FAILED, error="RuntimeError: boom")

    client = MlflowClient(uri)
    p = client.get_run(parent)
    assert p.data.tags[schema.TAG_ROLE] == schema.ROLE_STUDY and p.data.tags[schema.TAG_STAGE] == "finetune"
    assert [a.path for a in client.list_artifacts(parent)] == [schema.ARTIFACT_SPEC]
    r = client.get_run(run)
    assert r.data.tags[schema.TAG_PARENT] == parent and r.data.tags[schema.TAG_TRIAL_ID] == "t1"
    assert (r.data.tags[schema.TAG_STATUS], r.info.status) == (schema.STATUS_COMPLETED, "FINISHED")
    assert [(m.step, m.value) for m in client.get_metric_history(run, schema.M_VAL_MAUC)] == [
        (1, 0.6), (2, 0.8), (3, 0.7)]
    table = client.download_artifacts(run, schema.ARTIFACT_AUC_TABLE, str(tmp_path))
    assert Path(table).read_text().splitlines() == ["label,val_auc,test_auc,best_epoch",
                                                    "Hernia,0.900000,0.850000,2"]
    f = client.get_run(failed)
    assert (f.data.tags[schema.TAG_STATUS], f.info.status) == (schema.STATUS_FAILED, "FAILED")
    assert "boom" in f.data.tags[schema.TAG_ERROR]

    st = study_status("schema", uri)
    assert (st.counts[schema.STATUS_COMPLETED] == st.counts[schema.STATUS_PRUNED]
            == st.counts[schema.STATUS_FAILED] == 1)
    assert st.finished == 3 and st.num_samples == 3
    assert st.best[:2] == ("t2", 0.9)  # failed trials never count as best
    assert st.best[2] == {"finetune.layer_decay": "0.4"}
    assert locate_spec("schema", uri) == spec  # the spec.yaml artifact loads back to the same spec


def test_unknown_study_is_named(uri):
    from thoraxmae.study.errors import SpecError

    with pytest.raises(SpecError, match="no-such-study"):
        study_status("no-such-study", uri)
