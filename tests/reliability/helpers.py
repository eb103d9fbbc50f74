"""Helpers of the reliability suite: tiny pipeline specs, the `thoraxmae` CLI as a child process (each in its
own process group, with the local Ray it starts), kills timed by the test hooks of trainers.lineage
(trainers.faults) or by a new checkpoint folder, and exact MLflow histories."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from mlflow import MlflowClient

from tests.integration.study_helpers import CLI, trial_runs  # noqa: F401  (one copy each, re-exported)
from thoraxmae.study import schema
from thoraxmae.trainers import faults

# Fail fast when a worker group cannot be placed; no drain wait when a trial stops.
FAIL_FAST = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def pipeline_spec(store: Path, tmp: Path, name: str, *, num_samples: int = 1, pretrain_epochs: int = 3,
                  finetune_epochs: int = 3, checkpoint_every: int = 1, max_failures: int = 0,
                  reuse: bool = False) -> Path:
    """A `pipeline` study of the tiny ViT (64 px, patch 8, depth 2) on the phantom store; one knob. ASHA
    looks only at the last epoch (grace period = the epochs), so every trial runs all its epochs."""
    raw = {
        "name": name, "stage": "pipeline", "data": {"store": str(store)},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2,
                  "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
        "pretrain": {"epochs": pretrain_epochs, "warmup_epochs": 0, "batch_size": 16,
                     "max_steps_per_epoch": 2,
                     "checkpoint_every": checkpoint_every},
        "finetune": {"epochs": finetune_epochs, "warmup_epochs": 1, "batch_size": 16,
                     "max_steps_per_epoch": 2,
                     "blr": 1e-3, "bootstrap": 10},
        "search": {"num_samples": num_samples, "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
                   "scheduler": {"type": "asha", "grace_period": finetune_epochs, "reduction_factor": 3},
                   "space": {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}},
                   # off: the trial's own pre-training (tests/integration: reuse)
                   "reuse_pretraining": reuse},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1,
                      "max_failures": max_failures},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
        "storage_path": str(tmp / "studies"),
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Driver:
    """One `thoraxmae study run|resume` process (a new session: it and the local Ray it starts)."""

    def __init__(self, args: list[str], cwd: Path, log: Path, **env: str):
        full = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", faults.ENV)}
        full.update({**FAIL_FAST, **env})
        full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 (closed by kill/wait)
        self.proc = subprocess.Popen([*CLI, *args], env=full, cwd=cwd, stdout=self._out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text()[-4000:]

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 300,
                   poll: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, (f"the study ended (rc {self.proc.returncode}) "
                                              f"before {what}:\n{self.tail()}")
            assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{self.tail()}"
            time.sleep(poll)

    def kill(self) -> None:
        """SIGKILL the driver's whole process group: the driver and the Ray it started die at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._out.close()

    def wait(self, timeout: float = 600) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.kill()  # whatever it left behind in its group
        return rc


def hold(point: str, phase: str, epoch: int, folder: Path, *also: str) -> dict[str, str]:
    """The environment that makes the study wait at that point (trainers.faults.hold) for a kill, with
    further fault entries `also` (e.g. faults.fail_entry)."""
    return faults.env(faults.hold_entry(point, phase, epoch, folder), *also)


def checkpoints(storage: Path, study: str, phase: str) -> set[Path]:
    """The checkpoint folders the Train runs of `phase` have written so far (recorded or not)."""
    return set((storage / study / "train").glob(f"train-*-{phase}/checkpoint_*"))


def histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} of a run, in MLflow's order."""
    client = MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in sorted(keys)}


def steps(history: dict[str, list[tuple[int, float]]], key: str) -> list[int]:
    return [s for s, _ in history.get(key, [])]


def assert_exact_epochs(history: dict[str, list[tuple[int, float]]], pretrain_epochs: int,
                        finetune_epochs: int) -> None:
    """Every metric of a finished pipeline trial holds each of its epochs exactly once, in order:
    pre-training metrics 1..P, fine-tuning metrics 1..F, test metrics at F only."""
    assert steps(history, schema.M_PRETRAIN_LOSS) == list(range(1, pretrain_epochs + 1))
    assert steps(history, schema.M_VAL_MAUC) == list(range(1, finetune_epochs + 1))
    assert steps(history, schema.M_TRAIN_LOSS) == list(range(1, finetune_epochs + 1))
    for key, values in history.items():
        expected = ([finetune_epochs] if key.startswith("test/") else
                    list(range(1, (pretrain_epochs if key.startswith("pretrain/") else finetune_epochs) + 1)))
        assert [s for s, _ in values] == expected, (key, values)
