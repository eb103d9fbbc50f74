"""What both training loops need from Ray Train inside a worker: rank/world, device, mixed precision,
restoring the latest checkpoint, reporting an epoch (with a checkpoint from rank 0), gathering eval
outputs across ranks, and the cost clock.

Every rank calls `report` once per epoch (Ray Train's report is a barrier); only rank 0 writes files.
`restore_files` starts the run's lineage history (trainers.lineage) and `report` extends it: each
checkpoint carries it, and the first report after a restore sends it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from thoraxmae.trainers import faults, reporting
from thoraxmae.trainers.lineage import HISTORY_STATE, LINEAGE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def current_worker() -> Worker:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Worker(ctx.get_world_rank(), ctx.get_world_size(), device)


def seed_everything(seed: int, rank: int, epoch: int = 0) -> None:
    """Seed Python, numpy and torch from (seed, rank, epoch): a run resumed at epoch e does not replay
    the masks and augmentations of epoch 0."""
    import random

    value = int(np.random.default_rng([seed, rank, epoch]).integers(2**31))
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def autocast(device: torch.device):
    """bf16 autocast on GPU (docs/paper.md: mixed precision); full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(model: torch.nn.Module) -> torch.nn.Module:
    """Move to this worker's device and wrap in DDP when there are several workers."""
    import ray.train.torch

    return ray.train.torch.prepare_model(model)


def restore_files() -> dict[str, Any] | None:
    """{file name: loaded object} of the latest reported checkpoint (after a worker failure or a
    restarted trial), else None. Always `torch.load(weights_only=True)`."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        LINEAGE.restart([])
        return None
    with ckpt.as_directory() as folder:
        files = {p.name: torch.load(p, map_location="cpu", weights_only=True)
                 for p in Path(folder).glob("*.pt")}
    if reporting.CHECKPOINT_FILE not in files:
        raise FileNotFoundError(f"{ckpt.path}: checkpoint has no {reporting.CHECKPOINT_FILE}")
    state = files[reporting.CHECKPOINT_FILE]
    LINEAGE.restart(state.get(HISTORY_STATE, []))
    log.info("resuming from %s (epoch %s, %d epochs of "
             "history)", ckpt.path, state.get("epoch"), len(LINEAGE.epochs))
    return files


def report(worker: Worker, metrics: Mapping[str, Any], files: Mapping[str, Any] | None = None) -> None:
    """Report one epoch; with `files` ({name: object to torch.save}) rank 0 also attaches a checkpoint.
    The run's lineage history goes into CHECKPOINT_FILE (see the module docstring)."""
    import ray.train

    metrics = LINEAGE.record(metrics, send=worker.is_main)
    if worker.is_main:
        # tests only; no-op otherwise
        faults.hold("worker", _train_run_name(), metrics.get(reporting.M_EPOCH))
    if files is None:
        ray.train.report(metrics)
        return
    if reporting.CHECKPOINT_FILE in files:
        files = {**files, reporting.CHECKPOINT_FILE: {**files[reporting.CHECKPOINT_FILE],
                                                      HISTORY_STATE: LINEAGE.saved()}}
    with tempfile.TemporaryDirectory(prefix="thoraxmae-ckpt-") as tmp:
        checkpoint = None
        if worker.is_main:
            for name, obj in files.items():
                torch.save(obj, Path(tmp) / name)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def all_gather_arrays(worker: Worker, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate each array over all ranks (rank order); a no-op with one worker."""
    if not worker.distributed:
        return arrays
    parts: list[Any] = [None] * worker.world_size
    dist.all_gather_object(parts, arrays)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))


def all_reduce_mean(worker: Worker, value: float) -> float:
    if not worker.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=worker.device)
    dist.all_reduce(t)
    return float(t.item()) / worker.world_size


class CostClock:
    """Accelerator (or CPU) hours of the whole worker group, carried across restarts by the checkpoint.
    hours = wall hours x workers x devices per worker (GPUs per worker on GPU, CPUs per worker on CPU)."""

    def __init__(self, worker: Worker, devices_per_worker: float, spent_hours: float = 0.0):
        self.key = reporting.M_COST_GPU_HOURS if worker.device.type == "cuda" else reporting.M_COST_CPU_HOURS
        self.scale = worker.world_size * max(devices_per_worker, 1e-9)
        self.spent = spent_hours
        self.start = time.monotonic()

    def hours(self) -> float:
        return self.spent + (time.monotonic() - self.start) / 3600 * self.scale


def cpu_threads(cpus_per_worker: float) -> None:
    """Let torch use the CPUs this worker was given (Ray sets OMP_NUM_THREADS=1 otherwise)."""
    n = max(1, int(cpus_per_worker))
    if "THORAXMAE_TORCH_THREADS" in os.environ:
        n = int(os.environ["THORAXMAE_TORCH_THREADS"])
    torch.set_num_threads(n)



def _train_run_name() -> str:
    import ray.train

    try:
        return ray.train.get_context().get_experiment_name()
    except (RuntimeError, AttributeError):  # outside a Ray Train worker
        return ""
