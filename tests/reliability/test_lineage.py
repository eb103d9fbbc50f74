"""The pieces that keep every epoch exactly once in MLflow across kills, without Ray: the worker's lineage
history (in the checkpoint and in the first report after a restore), the Train->Tune forwarding that
carries it, and the MLflow callback that back-fills what a run lacks and never logs a step twice
(real SQLite MLflow)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema
from thoraxmae.study.run.trial import PhaseReportCallback, read_marker
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.callback import MlflowStudyCallback
from thoraxmae.study.tracking.results import HISTORY_KEY, PHASE_KEY, lineage_results
from thoraxmae.trainers.faults import ENV as FAULTS_ENV
from thoraxmae.trainers.faults import InjectedFailure, fail, hold
from thoraxmae.trainers.lineage import HISTORY_METRIC, Lineage, plain_metrics

NAN = math.nan


# --- the worker's lineage -------------------------------------------------------------------------
def test_a_fresh_run_sends_no_history_and_checkpoints_all_its_epochs():
    lineage = Lineage()
    lineage.restart([])
    sent = [lineage.record({"epoch": e, "train/loss": 1.0 / e}, send=True) for e in (1, 2)]
    assert [HISTORY_METRIC in m for m in sent] == [False, False]
    assert lineage.saved() == [{"epoch": 1, "train/loss": 1.0}, {"epoch": 2, "train/loss": 0.5}]


def test_a_restored_run_sends_its_checkpoint_history_once_from_rank_0():
    rank0, rank1 = Lineage(), Lineage()
    for lineage in (rank0, rank1):
        lineage.restart([{"epoch": 1, "val/mauc": 0.6}, {"epoch": 2, "val/mauc": NAN}])
    first = rank0.record({"epoch": 3, "val/mauc": 0.7}, send=True)
    sent = json.loads(first[HISTORY_METRIC])
    assert ([e["epoch"] for e in sent] == [1, 2] and sent[0]["val/mauc"] == 0.6
            and math.isnan(sent[1]["val/mauc"]))
    assert HISTORY_METRIC not in rank0.record({"epoch": 4, "val/mauc": 0.8}, send=True)
    assert HISTORY_METRIC not in rank1.record({"epoch": 3, "val/mauc": 0.7}, send=False)
    assert [e["epoch"] for e in rank0.saved()] == [1, 2, 3, 4]


def test_history_survives_a_weights_only_checkpoint(tmp_path):
    metrics = {"epoch": np.int64(2), "val/mauc": np.float32(0.5), "val/auc/Edema": np.float64(NAN),
               "best": np.bool_(True), "note": "x", "array": np.zeros(2)}
    plain = plain_metrics(metrics)
    assert plain == {"epoch": 2, "val/mauc": 0.5, "val/auc/Edema": plain["val/auc/Edema"], "best": 1}
    assert {type(v) for v in plain.values()} == {int, float}
    torch.save({"epoch": 2, "history": [plain]}, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert loaded["history"][0]["val/mauc"] == 0.5 and math.isnan(loaded["history"][0]["val/auc/Edema"])


def test_a_malformed_checkpoint_history_starts_empty():
    lineage = Lineage()
    lineage.restart("not a list")
    assert lineage.saved() == [] and HISTORY_METRIC not in lineage.record({"epoch": 1}, send=True)


def test_hold_waits_only_at_its_point_until_released(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv(FAULTS_ENV, f"fail:pretrain:1;hold:forward:finetune:2:{tmp_path / 'flags'}")
    hold("forward", "train-abc-finetune", 1)  # another epoch: no wait
    hold("worker", "train-abc-finetune", 2)  # another point
    hold("forward", "train-abc-pretrain", 2)  # another phase
    assert not (tmp_path / "flags").exists()
    flag = tmp_path / "flags" / "forward"
    waiter = threading.Thread(target=hold, args=("forward", "train-abc-finetune", 2))
    waiter.start()
    for _ in range(200):
        if flag.exists():
            break
        waiter.join(0.05)
    assert flag.read_text().startswith("train-abc-finetune 2 ") and waiter.is_alive()
    flag.unlink()
    waiter.join(10)
    assert not waiter.is_alive()


def test_fail_raises_once_only_where_named_and_never_after_a_restore(monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "hold:worker:*:1:/nowhere;fail:pretrain:2")
    fail("pretrain", 1, restored=False)  # another epoch
    fail("finetune", 2, restored=False)  # another phase
    fail("pretrain", 2, restored=True)  # resumed from a checkpoint: the retry passes
    with pytest.raises(InjectedFailure, match="pretrain epoch 2"):
        fail("pretrain", 2, restored=False)
    fail("pretrain", 2, restored=False, spec="")  # the train loop config's faults win over the environment
    monkeypatch.delenv(FAULTS_ENV)
    fail("pretrain", 2, restored=False)  # nothing set: no fault


# --- forwarding Train reports to Tune ---------------------------------------------------------------
@pytest.fixture()
def forwarded(monkeypatch):
    """What PhaseReportCallbacks put on Tune's queue (TuneReportCallback needs a Tune session otherwise)."""
    sent: list[dict] = []

    def init(self):
        self._training_actor_item_queue = SimpleNamespace(put=sent.append)

    monkeypatch.setattr(TuneReportCallback, "__init__", init)
    return sent


def _ckpt(path: str):
    return SimpleNamespace(path=path)


def test_a_restarted_phase_forwards_its_history_once_with_lineage_steps(forwarded, tmp_path):
    pre = [{"pretrain/epoch": 1, "pretrain/loss": 0.9, PHASE_KEY: "pretrain"},
           {"pretrain/epoch": 2, "pretrain/loss": 0.8, PHASE_KEY: "pretrain"}]
    marker = Location.of(tmp_path) / "run" / "thoraxmae_final.json"
    cb = PhaseReportCallback("finetune", schema.M_VAL_MAUC, True, 3, marker, {"cost/cpu_hours": 1.0}, pre, 2)
    carried = json.dumps([{"epoch": 1, "val/mauc": 0.6, "cost/cpu_hours": 0.5}])
    cb.after_report(None, [{"epoch": 2, "val/mauc": 0.7, "cost/cpu_hours": 1.0, HISTORY_METRIC: carried}],
                    _ckpt("c2"))
    cb.after_report(None, [{"epoch": 3, "val/mauc": 0.8, "cost/cpu_hours": 1.5}], _ckpt("c3"))

    first, last = forwarded
    assert [r["pretrain/epoch"] for r in lineage_results(first)[:2]] == [1, 2]
    ft = lineage_results(first)[2]
    assert (ft["epoch"], ft["val/mauc"], ft["cost/cpu_hours"], ft["training_iteration"]) == (1, 0.6, 1.5, 3)
    assert (HISTORY_METRIC not in first and first["training_iteration"] == 4
            and first[CHECKPOINT_PATH_KEY] == "c2")
    assert HISTORY_KEY not in last and last["training_iteration"] == 5
    done = read_marker(marker)
    assert done["checkpoint"] == "c3" and done["metrics"]["epoch"] == 3
    assert [h.get("epoch", h.get("pretrain/epoch")) for h in done["history"]] == [1, 2, 1, 2, 3]


def test_epochs_run_again_without_a_checkpoint_replace_the_old_ones(forwarded, tmp_path):
    marker = Location.of(tmp_path) / "thoraxmae_final.json"
    cb = PhaseReportCallback("pretrain", schema.M_VAL_MAUC, True, 2, marker)
    cb.after_report(None, [{"epoch": 1, "pretrain/loss": 0.9}], None)  # no checkpoint: the group restarts
    cb.after_report(None, [{"epoch": 1, "pretrain/loss": 0.95}], None)
    cb.after_report(None, [{"epoch": 2, "pretrain/loss": 0.7}], _ckpt("c2"))
    assert [HISTORY_KEY in r for r in forwarded] == [False, False, False]
    assert all(math.isnan(r[schema.M_VAL_MAUC]) and schema.M_EPOCH not in r for r in forwarded)
    history = read_marker(marker)["history"]
    assert [(h["pretrain/epoch"], h["pretrain/loss"]) for h in history] == [(1, 0.95), (2, 0.7)]


# --- MLflow back-fill ---------------------------------------------------------------------------------
def _pipeline_spec(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    (store / "manifest.json").write_text("{}")
    raw = {"name": "lineage", "stage": "pipeline", "data": {"store": str(store)},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "pretrain": {"epochs": 2, "warmup_epochs": 0}, "finetune": {"epochs": 3, "warmup_epochs": 1},
           "search": {"num_samples": 1,
                      "space": {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}},
           "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
           "storage_path": str(tmp_path / "studies")}
    return with_defaults(parse_spec(raw))


def _pre(epoch: int, loss: float) -> dict:
    return {"pretrain/epoch": epoch, "pretrain/loss": loss, "pretrain/train/lr": 0.1, schema.M_VAL_MAUC: NAN,
            PHASE_KEY: "pretrain", "training_iteration": epoch}


def _ft(epoch: int, mauc: float, **extra: float) -> dict:
    return {"epoch": epoch, "val/mauc": mauc, "train/loss": 1.0 - mauc, PHASE_KEY: "finetune",
            "training_iteration": 2 + epoch, **extra}


def _session(spec):
    callback = MlflowStudyCallback(spec)
    callback.setup()
    trial = SimpleNamespace(trial_id="t0", config={"finetune.layer_decay": 0.7}, last_result={},
                            error_file=None)
    callback.on_trial_start(0, [trial], trial)
    return callback, trial


def _histories(spec, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(spec.tracking.uri)
    keys = client.get_run(run_id).data.metrics
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in sorted(keys)}


def test_a_resumed_trial_back_fills_what_its_run_lacks_and_keeps_what_it_has(tmp_path):
    spec = _pipeline_spec(tmp_path)
    first, trial = _session(spec)  # the driver that gets killed
    first.on_trial_result(0, [trial], trial, _pre(1, 0.9))
    first.on_trial_result(0, [trial], trial, _pre(2, 0.8))
    first.on_trial_result(0, [trial], trial, _ft(1, 0.6))
    run_id = first._runs["t0"]
    first.tracker.log_steps(run_id, [(2, {"train/loss": 0.3})])  # killed between two batches of epoch 2

    second, trial = _session(spec)  # `study resume`: epoch 2 was checkpointed, its report never logged
    history = [_pre(1, 0.95), _pre(2, 0.8), _ft(1, 0.6), _ft(2, 0.65)]  # pre-training epoch 1 was run again
    second.on_trial_result(0, [trial], trial, {**_ft(3, 0.7, **{"test/mauc": 0.71}),
                                                HISTORY_KEY: json.dumps(history)})
    second.on_trial_result(0, [trial], trial, _ft(3, 0.7))  # a finished phase re-reported after another kill

    assert second._runs["t0"] == run_id
    got = _histories(spec, run_id)
    assert got == {"pretrain/loss": [(1, 0.9), (2, 0.8)], "pretrain/train/lr": [(1, 0.1), (2, 0.1)],
                   "test/mauc": [(3, 0.71)], "train/loss": [(1, 0.4), (2, 0.3), (3, pytest.approx(0.3))],
                   "val/mauc": [(1, 0.6), (2, 0.65), (3, 0.7)]}


def test_a_result_without_epoch_is_not_logged(tmp_path):
    spec = _pipeline_spec(tmp_path)
    callback, trial = _session(spec)
    callback.on_trial_result(0, [trial], trial, {"val/mauc": 0.5, PHASE_KEY: "finetune"})
    assert _histories(spec, callback._runs["t0"]) == {}


def test_runs_of_trials_tune_never_saved_are_dropped_on_resume(tmp_path):
    spec = _pipeline_spec(tmp_path)
    first, trial = _session(spec)
    first.on_trial_result(0, [trial], trial, _ft(1, 0.6))
    for lost in ("t-empty", "t-logged"):  # started in the killed session, unknown to Tune's saved state
        first.on_trial_start(0, [], SimpleNamespace(trial_id=lost, config={"finetune.layer_decay": 0.6}))
    first.on_trial_result(0, [], SimpleNamespace(trial_id="t-logged", config={}), _ft(1, 0.5))

    second, trial = _session(spec)  # Tune restored only t0
    second.on_step_begin(0, [trial])
    second.on_step_begin(1, [])  # only the first step looks
    client = MlflowClient(spec.tracking.uri)
    runs = {r.data.tags[schema.TAG_TRIAL_ID]: r for r in client.search_runs(
        [client.get_experiment_by_name(spec.experiment).experiment_id],
        filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_TRIAL}'")}
    assert sorted(runs) == ["t-logged", "t0"]
    assert runs["t0"].data.tags[schema.TAG_STATUS] == schema.STATUS_RUNNING
    assert runs["t-logged"].data.tags[schema.TAG_STATUS] == schema.STATUS_FAILED
    assert runs["t-logged"].data.tags[schema.TAG_ERROR].startswith("trial lost: the study's driver stopped")


def test_report_checkpoints_the_history_and_sends_it_after_a_restore(tmp_path, monkeypatch):
    """trainers.runtime wiring, with Ray Train's report and checkpoint lookup replaced by recorders."""
    import ray.train

    from thoraxmae.trainers import runtime

    sent: list[tuple[dict, dict | None]] = []

    def fake_report(metrics, checkpoint=None):
        state = torch.load(Path(checkpoint.path) / "checkpoint.pt", weights_only=True) if checkpoint else None
        if state is not None:
            (tmp_path / "saved").mkdir(exist_ok=True)
            torch.save(state, tmp_path / "saved" / "checkpoint.pt")
        sent.append((metrics, state))

    monkeypatch.setattr(ray.train, "report", fake_report)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    worker = runtime.Worker(0, 1, torch.device("cpu"))
    assert runtime.restore_files() is None
    runtime.report(worker, {"epoch": 1, "train/loss": 0.9}, {"checkpoint.pt": {"epoch": 1}})
    runtime.report(worker, {"epoch": 2, "train/loss": 0.8})  # no checkpoint: run again after a restart

    monkeypatch.setattr(ray.train, "get_checkpoint",
                        lambda: ray.train.Checkpoint.from_directory(tmp_path / "saved"))
    files = runtime.restore_files()
    assert files["checkpoint.pt"]["history"] == [{"epoch": 1, "train/loss": 0.9}]
    runtime.report(worker, {"epoch": 2, "train/loss": 0.7}, {"checkpoint.pt": {"epoch": 2}})

    assert [HISTORY_METRIC in m for m, _ in sent] == [False, False, True]
    assert json.loads(sent[2][0][HISTORY_METRIC]) == [{"epoch": 1, "train/loss": 0.9}]
    assert sent[0][1]["history"] == [{"epoch": 1, "train/loss": 0.9}]
    assert sent[2][1]["history"] == [{"epoch": 1, "train/loss": 0.9}, {"epoch": 2, "train/loss": 0.7}]
