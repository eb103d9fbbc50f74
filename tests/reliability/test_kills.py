"""Kill a `pipeline` study's driver (kill -9 of its process group, the local Ray with it) at the moments
that used to lose or duplicate an epoch, resume it with `thoraxmae study resume`, and check that every
metric of every trial run holds epochs 1..E exactly once, with exactly num_samples trial runs.

The kills are timed by the hooks of trainers.faults (THORAXMAE_FAULTS makes the worker or the Train
controller wait at one point until the test kills everything) or by a new checkpoint folder appearing.
One trial is killed five times: each `study resume` costs a Ray start and a Train run start, so the
moments share one lineage instead of one study each."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    Driver,
    assert_exact_epochs,
    checkpoints,
    histories,
    hold,
    pipeline_spec,
    steps,
    trial_runs,
)
from thoraxmae.study import schema
from thoraxmae.study.run.trial import FINAL_MARKER
from thoraxmae.trainers import faults

pytestmark = pytest.mark.integration


def _resume(name: str, uri: str, tmp: Path, log: str, **env: str) -> Driver:
    return Driver(["study", "resume", name, "--tracking-uri", uri], tmp, tmp / log, **env)


def _killed_at(driver: Driver, flag: Path, what: str, logged: Callable[[], bool] | None = None) -> None:
    """Kill once the study holds at `flag` (and the earlier reports are `logged`, when given)."""
    driver.wait_until(flag.exists, what)
    if logged is not None:
        driver.wait_until(logged, f"the reports before {what} in MLflow", timeout=60, poll=0.2)
    driver.kill()


def _pretrain_steps(uri: str, run_id: str) -> list[int]:
    return steps(histories(uri, run_id), schema.M_PRETRAIN_LOSS)


def test_a_pipeline_trial_killed_at_every_moment_loses_and_repeats_no_epoch(phantom_store, tmp_path):
    """Pre-training 3 epochs (checkpoints at 2 and 3), fine-tuning 4; the driver killed five times, the
    worker failing once (fine-tuning epoch 2: Train restarts it from epoch 1's checkpoint)."""
    name, uri, storage = "kills", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "studies"
    spec = pipeline_spec(phantom_store, tmp_path, name, finetune_epochs=4, checkpoint_every=2, max_failures=1)

    # 1. pre-training epoch 2 done, before its report and checkpoint: epoch 1 is logged, not checkpointed
    run = Driver(["study", "run", str(spec)], tmp_path, tmp_path / "run.log",
                 **hold("worker", "pretrain", 2, tmp_path / "h1"))
    _killed_at(run, tmp_path / "h1" / "worker", "pre-training epoch 2",
               lambda: any(_pretrain_steps(uri, r.info.run_id) == [1] for r in trial_runs(uri, name)))
    (only,) = trial_runs(uri, name)
    run_id = only.info.run_id

    # 2. pre-training's last checkpoint recorded and the phase marked finished, its report not forwarded
    r2 = _resume(name, uri, tmp_path, "r2.log", **hold("forward", "pretrain", 3, tmp_path / "h2"))
    _killed_at(r2, tmp_path / "h2" / "forward", "pre-training's last report",
               lambda: len(_pretrain_steps(uri, run_id)) >= 2)
    assert list((storage / name / "train").glob(f"train-*-pretrain/{FINAL_MARKER}"))
    assert _pretrain_steps(uri, run_id) == [1, 2]  # epoch 1 was run again, not logged again

    # 3. the reported failure, after a worker failure: fine-tuning epoch 2 checkpointed, the driver dies
    #    before its report is forwarded
    r3 = _resume(name, uri, tmp_path, "r3.log",
                 **hold("forward", "finetune", 2, tmp_path / "h3", faults.fail_entry("finetune", 2)))
    _killed_at(r3, tmp_path / "h3" / "forward", "fine-tuning epoch 2's report",
               lambda: steps(histories(uri, run_id), schema.M_VAL_MAUC) == [1])
    assert _pretrain_steps(uri, run_id) == [1, 2, 3]  # back-filled with fine-tuning's first report

    # 4. during fine-tuning epoch 3's checkpoint: killed as soon as its folder appears
    before = checkpoints(storage, name, "finetune")
    r4 = _resume(name, uri, tmp_path, "r4.log")
    r4.wait_until(lambda: len(checkpoints(storage, name, "finetune") - before) > 0,
                  "a new fine-tuning checkpoint")
    r4.kill()

    # 5. fine-tuning's last checkpoint recorded and the trial marked finished, its last report not forwarded
    r5 = _resume(name, uri, tmp_path, "r5.log", **hold("forward", "finetune", 4, tmp_path / "h5"))
    _killed_at(r5, tmp_path / "h5" / "forward", "fine-tuning's last report")
    assert 4 not in steps(histories(uri, run_id), schema.M_VAL_MAUC)

    last = _resume(name, uri, tmp_path, "r6.log")
    assert last.wait() == 0, last.tail()
    runs = trial_runs(uri, name)
    assert [r.info.run_id for r in runs] == [run_id]  # exactly num_samples trial runs
    assert runs[0].data.tags[schema.TAG_STATUS] == schema.STATUS_COMPLETED, runs[0].data.tags
    got = histories(uri, run_id)
    assert_exact_epochs(got, pretrain_epochs=3, finetune_epochs=4)

    # Tune and Optuna: the objective is the last epoch's; each result's step is its place in the lineage,
    # so the re-reported and back-filled epochs never reached Optuna twice after the pre-training re-run
    from ray.tune import ExperimentAnalysis

    (trial,) = ExperimentAnalysis(str(storage / name)).trials
    assert trial.status == "TERMINATED" and trial.last_result[schema.M_EPOCH] == 4
    assert trial.last_result[schema.M_VAL_MAUC] == got[schema.M_VAL_MAUC][-1][1]
    assert trial.last_result["training_iteration"] == 3 + 4
    for log in ("r3.log", "r4.log", "r5.log", "r6.log"):
        assert "already reported" not in (tmp_path / log).read_text(), log
