"""Studies on the real local Ray (2 CPUs) with real MLflow (SQLite) on the phantom store."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import history, study_runs, tiny_spec, trial_runs, write_spec
from thoraxmae.study import schema
from thoraxmae.study.spec.load import load_spec

pytestmark = pytest.mark.integration


def test_finetune_study_prunes_and_tracks_every_trial(study_ray, phantom_store, tmp_path):
    from thoraxmae.study.run.tune import run_study

    raw = tiny_spec(phantom_store, tmp_path, "ft-study", num_samples=5)
    # the paper-like point learns; the second barely moves (blr 1e-6), so ASHA stops it at its first rung
    raw["search"]["points_to_evaluate"] = [{"finetune.layer_decay": 0.75, "finetune.blr": 3e-3},
                                           {"finetune.layer_decay": 0.75, "finetune.blr": 1e-6}]
    spec = load_spec(write_spec(raw, tmp_path / "spec.yaml"))
    grid = run_study(spec)

    uri = spec.tracking.uri
    assert len(grid) == 5 and not grid.errors
    parents = study_runs(uri, "ft-study")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    runs = trial_runs(uri, "ft-study")
    assert len(runs) == 5
    assert len({r.data.tags[schema.TAG_TRIAL_ID] for r in runs}) == 5
    assert all(r.data.tags[schema.TAG_PARENT] == parents[0].info.run_id for r in runs)
    statuses = [r.data.tags[schema.TAG_STATUS] for r in runs]
    assert statuses.count(schema.STATUS_PRUNED) >= 1, statuses
    assert set(statuses) <= {schema.STATUS_COMPLETED, schema.STATUS_PRUNED}
    for r in runs:
        assert {"finetune.layer_decay", "finetune.blr", "finetune.lr",
                "finetune.drop_path"} <= set(r.data.params)
        steps = [s for s, _ in history(uri, r.info.run_id, schema.M_VAL_MAUC)]
        assert steps == list(range(1, len(steps) + 1)) and steps, steps
        if r.data.tags[schema.TAG_STATUS] == schema.STATUS_COMPLETED:
            assert steps[-1] == 3 and schema.M_TEST_MAUC in r.data.metrics
            arts = {a.path for a in MlflowClient(uri).list_artifacts(r.info.run_id)}
            assert {schema.ARTIFACT_CHECKPOINT_DIR, schema.ARTIFACT_AUC_TABLE} <= arts
        else:
            assert steps[-1] < 3
    lr = {float(r.data.params["finetune.blr"]): float(r.data.params["finetune.lr"]) for r in runs}
    assert lr[1e-6] == pytest.approx(1e-6 * 16 / 256)  # derived lr = blr * global batch / 256


def test_pipeline_study_pretrains_then_finetunes(study_ray, phantom_store, tmp_path):
    from thoraxmae.study.run.tune import run_study

    raw = tiny_spec(phantom_store, tmp_path, "pipe-study", stage="pipeline", num_samples=2)
    # each trial pre-trains its own encoder (reuse: test_pretrain_reuse)
    raw["search"]["reuse_pretraining"] = False
    spec = load_spec(write_spec(raw, tmp_path / "spec.yaml"))
    grid = run_study(spec)

    assert len(grid) == 2 and not grid.errors
    uri = spec.tracking.uri
    runs = trial_runs(uri, "pipe-study")
    assert len(runs) == 2
    for r in runs:
        assert r.data.tags[schema.TAG_STATUS] in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED)
        assert (r.data.params["pretrain.mask_ratio"] in ("0.75", "0.9")
                and "finetune.layer_decay" in r.data.params)
        assert [s for s, _ in history(uri, r.info.run_id, schema.M_PRETRAIN_LOSS)] == [1, 2]
        assert next(s for s, _ in history(uri, r.info.run_id, schema.M_VAL_MAUC)) == 1
        pre_cost = r.data.metrics.get(f"pretrain/{schema.M_COST_CPU_HOURS}")
        assert pre_cost is not None and r.data.metrics[schema.M_COST_CPU_HOURS] > pre_cost
    # every trial fine-tuned its own encoder: one pre-training Train run per trial, marked done
    done = list((spec.storage_path / spec.name / "train").glob("train-*-pretrain/thoraxmae_final.json"))
    assert len(done) == 2


def test_a_failing_trial_is_recorded_with_its_error_and_the_study_goes_on(study_ray, phantom_store, tmp_path):
    from thoraxmae.study.run.tune import run_study

    raw = tiny_spec(phantom_store, tmp_path, "fail-study", num_samples=2, concurrent=2)
    raw["finetune"]["epochs"] = 1
    raw["resources"]["max_failures"] = 1  # Train retries the worker group once; the trial still fails
    raw["search"]["space"] = {"finetune.batch_size": {"type": "categorical", "choices": [16, 5000]}}
    raw["search"]["points_to_evaluate"] = [{"finetune.batch_size": 5000}, {"finetune.batch_size": 16}]
    spec = load_spec(write_spec(raw, tmp_path / "spec.yaml"))
    grid = run_study(spec)

    assert len(grid) == 2 and len(grid.errors) == 1
    runs = trial_runs(spec.tracking.uri, "fail-study")
    assert len(runs) == 2
    by_batch = {}
    for r in runs:
        by_batch.setdefault(r.data.params["finetune.batch_size"], []).append(r)
    failed = [r for r in runs if r.data.tags[schema.TAG_STATUS] == schema.STATUS_FAILED]
    assert failed and all(r.data.params["finetune.batch_size"] == "5000" for r in failed)
    assert all("batch_size=5000" in r.data.tags[schema.TAG_ERROR] for r in failed)
    assert any(r.data.tags[schema.TAG_STATUS] == schema.STATUS_COMPLETED for r in by_batch["16"])
    assert study_runs(spec.tracking.uri, "fail-study")[0].info.status == "FINISHED"


def test_a_study_whose_every_trial_failed_exits_1_and_shows_the_first_error(study_ray, phantom_store,
                                                                            tmp_path,
                                                                             capsys):
    from thoraxmae.cli import main

    raw = tiny_spec(phantom_store, tmp_path, "all-fail", num_samples=2, concurrent=2)
    raw["finetune"]["epochs"] = 1
    raw["search"]["space"] = {"finetune.batch_size": {"type": "categorical", "choices": [4000, 5000]}}
    spec = write_spec(raw, tmp_path / "spec.yaml")
    assert main(["study", "run", str(spec)]) == 1
    out, err = capsys.readouterr()
    assert "best val/mauc" not in out  # no failed trial is ever named best
    lines = err.strip().splitlines()
    assert lines[-1] == "error: study all-fail: no trial was scored (val/mauc)"
    assert lines[-2].startswith("2 of 2 trials failed; first error (trial "
                                "") and "batch_size=" in lines[-2], lines
    st = main(["study", "status", "all-fail", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert st == 0 and "first failed trial" in capsys.readouterr().out
