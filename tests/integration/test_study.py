"""Studies on the real local Ray (2 CPUs) with real MLflow (SQLite) on the phantom store."""
from __future__ import annotations

import subprocess

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import (
    CLI,
    history,
    study_runs,
    subprocess_env,
    tiny_spec,
    trial_runs,
    write_spec,
)
from thoraxmae.study import schema
from thoraxmae.study.spec.load import load_spec
from thoraxmae.trainers import faults

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


def run_cli_study(spec, tmp_path, *fault_entries: str) -> subprocess.CompletedProcess:
    """`thoraxmae study run` as a child process with its own local Ray, so the test-only fault entries
    (trainers.faults) reach the trial workers it starts."""
    return subprocess.run([*CLI, "study", "run", str(spec)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, check=False, env=subprocess_env(**faults.env(*fault_entries)))


def test_a_failing_trial_is_recorded_with_its_error_and_the_study_goes_on(phantom_store, tmp_path):
    raw = tiny_spec(phantom_store, tmp_path, "fail-study", num_samples=2, concurrent=1)
    raw["finetune"]["epochs"] = 1
    raw["resources"]["max_failures"] = 0
    spec = write_spec(raw, tmp_path / "spec.yaml")
    # the first trial's worker raises in its first epoch; the second runs as usual
    done = run_cli_study(spec, tmp_path, faults.fail_entry("finetune", 1, once_in=tmp_path / "faults"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 of 2 trials failed; first error (trial" in done.stderr

    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "fail-study")
    by_status = {}
    for r in runs:
        by_status.setdefault(r.data.tags[schema.TAG_STATUS], []).append(r)
    assert sorted(by_status) == sorted([schema.STATUS_FAILED, schema.STATUS_COMPLETED]), by_status
    (failed,), (completed,) = by_status[schema.STATUS_FAILED], by_status[schema.STATUS_COMPLETED]
    assert "injected failure in finetune epoch 1" in failed.data.tags[schema.TAG_ERROR]
    assert schema.M_VAL_MAUC not in failed.data.metrics and schema.M_TEST_MAUC in completed.data.metrics
    assert study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "fail-study")[0].info.status == "FINISHED"


def test_a_study_whose_every_trial_failed_exits_1_and_shows_the_first_error(phantom_store, tmp_path, capsys):
    from thoraxmae.cli import main

    raw = tiny_spec(phantom_store, tmp_path, "all-fail", num_samples=2, concurrent=2)
    raw["finetune"]["epochs"] = 1
    spec = write_spec(raw, tmp_path / "spec.yaml")
    done = run_cli_study(spec, tmp_path, faults.fail_entry("finetune", 1))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "best val/mauc" not in done.stdout  # no failed trial is ever named best
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "error: study all-fail: no trial was scored (val/mauc)"
    assert lines[-2].startswith("2 of 2 trials failed; first error (trial ") and \
        "injected failure in finetune epoch 1" in lines[-2], lines
    st = main(["study", "status", "all-fail", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert st == 0 and "first failed trial" in capsys.readouterr().out
