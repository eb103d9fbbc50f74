"""A pipeline study whose two trials share one pre-training (study/registry.py), its driver killed
(kill -9 of its process group) in the middle of that pre-training, then `thoraxmae study resume`: still
exactly one pre-training Train run and one MLflow pretrain run with epochs 1..P once, and every trial
finished once, fine-tuned from it."""
from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient

from tests.reliability.helpers import Driver, hold, pipeline_spec, trial_runs
from thoraxmae.study import schema
from thoraxmae.study.registry import Registry

pytestmark = pytest.mark.integration


def _pretrain_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = "
                                                                 f"'{schema.ROLE_PRETRAIN}'")


def test_driver_killed_during_a_shared_pretraining_resumes_it_once(phantom_store, tmp_path):
    name, uri, storage = "shared-kill", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "studies"
    path = pipeline_spec(phantom_store, tmp_path, name, num_samples=2, pretrain_epochs=3, finetune_epochs=2,
                         reuse=True)
    raw = yaml.safe_load(path.read_text())
    raw["resources"]["max_concurrent_trials"] = 2  # both trials want the one key at once: one runs, one waits
    path.write_text(yaml.safe_dump(raw))

    run = Driver(["study", "run", str(path)], tmp_path, tmp_path / "run.log",
                 **hold("worker", "pretrain", 2, tmp_path / "h1"))
    run.wait_until((tmp_path / "h1" / "worker").exists, "pre-training epoch 2")
    run.kill()
    registry = Registry(storage)
    assert registry.entries() == []  # not finished: nothing registered yet
    assert len(list(registry.root.path.glob("*/pretrain"))) == 1

    last = Driver(["study", "resume", name, "--tracking-uri", uri], tmp_path, tmp_path / "resume.log")
    assert last.wait() == 0, last.tail()

    (entry,) = registry.entries()
    # resumed, not started again
    assert [p.parent.name for p in registry.root.path.glob("*/pretrain")] == [entry.key]
    (pre,) = _pretrain_runs(uri, name)
    steps = [m.step for m in MlflowClient(uri).get_metric_history(pre.info.run_id, schema.M_PRETRAIN_LOSS)]
    assert steps == [1, 2, 3]
    runs = trial_runs(uri, name)
    assert len(runs) == 2
    assert {r.data.tags[schema.TAG_STATUS] for r in runs} == {schema.STATUS_COMPLETED}
    assert {r.data.tags[schema.TAG_PRETRAIN_KEY] for r in runs} == {entry.key}
    for r in runs:
        val = [m.step for m in MlflowClient(uri).get_metric_history(r.info.run_id, schema.M_VAL_MAUC)]
        assert val == [1, 2], (r.data.tags[schema.TAG_TRIAL_ID], val)
