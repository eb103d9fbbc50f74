"""The start and the checkpoint of a training run, shared by both loops: worker set-up, resuming the
model and optimizer from the latest checkpoint, the cost clock, the LR schedule and the saved state.

    worker = start_worker(job.resources, cfg.seed)
    files = restore_files()
    run = resume(build_model(...), lambda m: torch.optim.AdamW(param_groups(m, ...)), job.resources, worker,
                 seed, files)
    for epoch in range(run.start_epoch, cfg.epochs): ...
        report(worker, metrics, {CHECKPOINT_FILE: run.state_dict(epoch + 1, job.model)})
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from thoraxmae.trainers import reporting as R
from thoraxmae.trainers.config import FinetuneConfig, ModelConfig, PretrainConfig
from thoraxmae.trainers.engine import Schedule
from thoraxmae.trainers.jobs import WorkerResources
from thoraxmae.trainers.models.unwrap import unwrap
from thoraxmae.trainers.optim import absolute_lr
from thoraxmae.trainers.runtime import (
    CostClock,
    Worker,
    cpu_threads,
    current_worker,
    prepare,
    seed_everything,
)


def start_worker(resources: WorkerResources, seed: int) -> Worker:
    cpu_threads(resources.cpus_per_worker)
    worker = current_worker()
    seed_everything(seed, worker.rank)  # DDP then broadcasts rank 0's initial weights to every rank
    return worker


@dataclass
class Run:
    """A model (on its device, DDP-wrapped when distributed) and its optimizer, resumed or fresh."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    clock: CostClock
    files: dict[str, Any] | None  # the restored checkpoint's files, None for a fresh run

    @property
    def state(self) -> dict[str, Any] | None:
        return self.files[R.CHECKPOINT_FILE] if self.files else None

    @property
    def restored(self) -> bool:
        return self.files is not None

    @property
    def start_epoch(self) -> int:
        return int(self.state["epoch"]) if self.state else 0

    def saved(self, key: str, default: Any) -> Any:
        """A value the restored checkpoint carries (`default` for a fresh run)."""
        return self.state.get(key, default) if self.state else default

    def state_dict(self, epoch: int, model_config: ModelConfig, **extra: Any) -> dict[str, Any]:
        """What CHECKPOINT_FILE holds: weights (reference names), optimizer, epoch, cost, `extra`."""
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "cost_hours": self.clock.hours(), "model_config": model_config.model_dump(mode="json"),
                **extra}


def resume(model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
           resources: WorkerResources, worker: Worker, seed: int, files: dict[str, Any] | None) -> Run:
    """Load the weights and optimizer state of `files` (`restore_files()`: the latest checkpoint when Ray
    Train restarted this run, else None) and reseed from the epoch it resumes at."""
    state = files[R.CHECKPOINT_FILE] if files else None
    if state is not None:
        model.load_state_dict(state["model"])
    model = prepare(model)
    optimizer = make_optimizer(model)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    devices = resources.gpus_per_worker if worker.device.type == "cuda" else resources.cpus_per_worker
    clock = CostClock(worker, devices, float(state.get("cost_hours", 0.0)) if state else 0.0)
    run = Run(model, optimizer, clock, files)
    if run.restored:
        seed_everything(seed, worker.rank, run.start_epoch)
    return run


def schedule(cfg: PretrainConfig | FinetuneConfig, worker: Worker) -> Schedule:
    """The per-iteration LR schedule of a phase; lr = blr * global batch / 256 (docs/paper.md)."""
    lr = absolute_lr(cfg.blr, cfg.batch_size, cfg.accum_iter, worker.world_size)
    kind, decay = getattr(cfg, "schedule", "cosine"), getattr(cfg, "decay_epochs", None) or 0
    return Schedule(lr, cfg.min_lr, cfg.warmup_epochs, cfg.epochs, cfg.accum_iter, cfg.max_steps_per_epoch,
                    kind, decay)
