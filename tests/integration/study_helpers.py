"""Tiny study specs and MLflow queries shared by the study integration tests."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

from thoraxmae.study import schema
from thoraxmae.study.run.ray_local import free_ports  # noqa: F401  (the tests pick ports with the study's own helper)

# The CLI as a child process (this interpreter: its venv).
CLI = [sys.executable, "-m", "thoraxmae"]
# Fail fast when a trial's worker group cannot be placed, instead of hanging the suite.
TEST_ENV = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


def tiny_spec(store: Path, tmp: Path, name: str, stage: str = "finetune", num_samples: int = 4,
              concurrent: int = 1, uri: str | None = None) -> dict:
    """A spec for the tiny ViT (64 px, patch 8, depth 2) with few, capped epochs."""
    spec = {
        "name": name, "stage": stage, "data": {"store": str(store)},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2,
                  "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
        "search": {"num_samples": num_samples,
                   "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
                   "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
                   "space": {}},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": concurrent,
                      "max_failures": 0},
        "tracking": {"uri": uri or f"sqlite:///{tmp / 'mlflow.db'}"},
        "storage_path": str(tmp / "studies"),
    }
    if stage in ("finetune", "pipeline"):
        spec["finetune"] = {"epochs": 3, "warmup_epochs": 1, "batch_size": 16, "max_steps_per_epoch": 4,
                            "blr": 1e-3, "bootstrap": 20}
        spec["search"]["space"]["finetune.layer_decay"] = {"type": "float", "low": 0.5, "high": 0.9}
        spec["search"]["space"]["finetune.blr"] = {"type": "float", "low": 1e-6, "high": 3e-3, "log": True}
    if stage in ("pretrain", "pipeline"):
        spec["pretrain"] = {"epochs": 2, "warmup_epochs": 0, "batch_size": 16, "max_steps_per_epoch": 3}
        spec["search"]["space"]["pretrain.mask_ratio"] = {"type": "categorical", "choices": [0.75, 0.9]}
    if stage == "pipeline":
        spec["search"]["coverage"] = 1  # each pre-training recipe once before TPE: 2 trials cover both
    return spec


def write_spec(spec: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = "
                                                                 f"'{schema.ROLE_TRIAL}'")


def study_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = "
                                                                 f"'{schema.ROLE_STUDY}'")


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key)]


def subprocess_env(**extra: str) -> dict[str, str]:
    """This interpreter's bin first on PATH (a Ray job runs `python -m thoraxmae ...`)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({**TEST_ENV, **extra})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def stop_process(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the process, then SIGKILL its process group (ours: started with a new session)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
