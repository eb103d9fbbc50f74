"""Pipeline studies pre-train each recipe once (real local Ray, real SQLite MLflow, the registry on disk):
concurrent trials of one recipe share one pre-training, every recipe is covered, a damaged cached
checkpoint is rebuilt with a warning, and a later study on the same storage reuses what is registered."""
from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import tiny_spec, trial_runs, write_spec
from thoraxmae.study import schema
from thoraxmae.study.registry import ENTRY_FILE, Registry
from thoraxmae.study.spec.load import load_spec

pytestmark = pytest.mark.integration


def _pretrain_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = "
                                                                 f"'{schema.ROLE_PRETRAIN}'")


def _train_runs(registry: Registry) -> list:
    """Pre-training Train runs in the registry (one folder per key that was ever pre-trained)."""
    return sorted(p.parent.name for p in registry.root.path.glob("*/pretrain"))


def _spec(store, tmp, name, *, choices, num_samples, coverage, concurrent=2):
    raw = tiny_spec(store, tmp, name, stage="pipeline", num_samples=num_samples, concurrent=concurrent)
    raw["search"]["space"]["pretrain.mask_ratio"] = {"type": "categorical", "choices": choices}
    raw["search"]["coverage"] = coverage
    raw["search"]["scheduler"] = {"type": "none"}
    raw["finetune"]["epochs"] = 2
    return load_spec(write_spec(raw, tmp / f"{name}.yaml"))


def test_concurrent_trials_of_one_recipe_share_one_pretraining(study_ray, phantom_store, tmp_path):
    from thoraxmae.study.run.tune import run_study

    spec = _spec(phantom_store, tmp_path, "share", choices=[0.9], num_samples=2, coverage=2)
    grid = run_study(spec)

    assert len(grid) == 2 and not grid.errors
    registry = Registry(spec.storage_path)
    (entry,) = registry.entries()
    assert _train_runs(registry) == [entry.key]  # one pre-training Train run, not one per trial
    (pre,) = _pretrain_runs(spec.tracking.uri, "share")  # one MLflow pretrain run
    assert (pre.data.tags[schema.TAG_PRETRAIN_KEY] == entry.key
            and pre.data.params["pretrain.mask_ratio"] == "0.9")
    steps = [m.step for m in MlflowClient(spec.tracking.uri).get_metric_history(pre.info.run_id,
                                                                                schema.M_PRETRAIN_LOSS)]
    assert steps == [1, 2]
    runs = trial_runs(spec.tracking.uri, "share")
    assert len(runs) == 2
    assert {r.data.tags[schema.TAG_PRETRAIN_KEY] for r in runs} == {entry.key}
    assert {r.data.tags[schema.TAG_PRETRAIN_RUN] for r in runs} == {pre.info.run_id}
    assert sorted(r.data.tags[schema.TAG_PRETRAIN_REUSED] for r in runs) == ["false", "true"]
    for r in runs:  # the trial run holds its fine-tuning; the pre-training's epochs live in the pretrain run
        assert schema.M_PRETRAIN_LOSS not in r.data.metrics and schema.M_VAL_MAUC in r.data.metrics
    parent = MlflowClient(spec.tracking.uri).get_run(runs[0].data.tags[schema.TAG_PARENT])
    spent, no_reuse = (parent.data.metrics[schema.M_PRETRAIN_COST_SPENT.format(unit="cpu_hours")],
                       parent.data.metrics[schema.M_PRETRAIN_COST_NO_REUSE.format(unit="cpu_hours")])
    assert spent > 0 and no_reuse == pytest.approx(2 * spent)


def test_every_recipe_covered_then_a_later_study_reuses_and_rebuilds_a_damaged_one(study_ray, phantom_store,
                                                                                      tmp_path, caplog):
    from thoraxmae.study.run.tune import run_study

    spec = _spec(phantom_store, tmp_path, "cover", choices=[0.75, 0.9], num_samples=4, coverage=2)
    grid = run_study(spec)
    assert len(grid) == 4 and not grid.errors
    runs = trial_runs(spec.tracking.uri, "cover")
    assert Counter(r.data.params["pretrain.mask_ratio"] for r in runs) == {"0.75": 2, "0.9": 2}
    registry = Registry(spec.storage_path)
    keys = {e.recipe["mask_ratio"]: e.key for e in registry.entries()}
    assert sorted(keys) == [0.75, 0.9] and len(_train_runs(registry)) == 2
    assert len(_pretrain_runs(spec.tracking.uri, "cover")) == 2

    # a second study on the same storage: 0.9 is reused as registered; 0.75's checkpoint is deleted -> rebuilt
    entry = json.loads((registry.folder(keys[0.75]) / ENTRY_FILE).read_text())
    import os

    os.remove(entry["checkpoint"])
    later = _spec(phantom_store, tmp_path, "later", choices=[0.75, 0.9], num_samples=2, coverage=1)
    with caplog.at_level(logging.WARNING):
        grid = run_study(later)
    assert len(grid) == 2 and not grid.errors
    assert "is missing; discarding it, it will be pre-trained again" in caplog.text
    rebuilt = registry.lookup(keys[0.75])
    assert rebuilt is not None and rebuilt.source["study"] == "later"
    assert registry.lookup(keys[0.9]).source["study"] == "cover"  # reused, not run again
    (pre,) = _pretrain_runs(later.tracking.uri, "later")  # only the rebuilt one is this study's
    assert pre.data.tags[schema.TAG_PRETRAIN_KEY] == keys[0.75]
    reused = {r.data.params["pretrain.mask_ratio"]: r for r in trial_runs(later.tracking.uri, "later")}
    assert reused["0.9"].data.tags[schema.TAG_PRETRAIN_REUSED] == "true"
    # linked to the pretrain run of the study that ran it (another experiment)
    first = {r.data.tags[schema.TAG_PRETRAIN_KEY]: r.info.run_id
             for r in _pretrain_runs(spec.tracking.uri, "cover")}
    assert reused["0.9"].data.tags[schema.TAG_PRETRAIN_RUN] == first[keys[0.9]]
