"""One training epoch and one evaluation pass, shared by the pre-training and fine-tuning loops.

`train_epoch` steps the LR per iteration (linear warm-up + cosine, docs/paper.md), accumulates gradients
over `accum_iter` micro-batches (without DDP gradient sync until the last one) and runs under bf16
autocast on GPU. The loss function is the only thing that differs between the phases.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from thoraxmae.trainers.optim import lr_at, set_lr
from thoraxmae.trainers.runtime import Worker, all_gather_arrays, all_reduce_mean, autocast

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images [B, C, H, W], labels [B, K], mask [B, K]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    base_lr: float
    min_lr: float
    warmup_epochs: float
    epochs: float
    accum_iter: int = 1
    max_steps_per_epoch: int | None = None
    kind: str = "cosine"  # cosine | constant | wsd (trainers.optim.lr_at)
    decay_epochs: float = 0.0  # wsd only


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean over ranks of each rank's mean micro-batch loss
    lr: float  # LR at the epoch's last step (before layer scaling)
    seconds: float
    images: int  # images seen by all ranks together

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def _to(batch: Batch, device: torch.device) -> Batch:
    return tuple(t.to(device, non_blocking=True) for t in batch)  # type: ignore[return-value]


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                epoch: int, sched: Schedule, worker: Worker) -> EpochStats:
    model.train()
    steps = len(loader) if sched.max_steps_per_epoch is None else min(len(loader), sched.max_steps_per_epoch)
    if steps == 0:
        raise ValueError("the training loader yields no batch (fewer images than batch_size on a rank?)")
    t0, total, seen, lr = time.monotonic(), 0.0, 0, 0.0
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader):
        if i >= steps:
            break
        if i % sched.accum_iter == 0:
            lr = lr_at(epoch + i / steps, sched.base_lr, sched.min_lr, sched.warmup_epochs, sched.epochs,
                       sched.kind, sched.decay_epochs)
            set_lr(optimizer, lr)
        images, labels, mask = _to(batch, worker.device)
        last_micro = (i + 1) % sched.accum_iter == 0 or i + 1 == steps
        # DDP: skip the gradient all-reduce on all but the last micro-batch (forward and backward inside)
        sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(worker.device):
                loss = loss_fn(model, (images, labels, mask))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1} (lr "
                                         f"{lr:.3g})")
            # last may be short
            group = min(sched.accum_iter, steps - i // sched.accum_iter * sched.accum_iter)
            (loss / group).backward()
        if last_micro:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total += float(loss.detach())
        seen += images.shape[0]
    seconds = time.monotonic() - t0
    return EpochStats(all_reduce_mean(worker, total / steps), lr, seconds, seen * worker.world_size)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, worker: Worker, multiclass: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels [n, K], scores [n, K], mask [n, K]) over the whole split, gathered from every rank.
    Scores are sigmoid (multi-label) or softmax (multi-class) probabilities."""
    model.eval()
    ys, ss, ms = [], [], []
    for batch in loader:
        images, labels, mask = _to(batch, worker.device)
        with autocast(worker.device):
            logits = model(images).float()  # [B, K]
        scores = logits.softmax(-1) if multiclass else logits.sigmoid()
        ys.append(labels.cpu().numpy())
        ss.append(scores.cpu().numpy())
        ms.append(mask.cpu().numpy())
    k = loader.dataset.labels.shape[1]
    empty = np.zeros((0, k), np.float32)
    parts = tuple(np.concatenate(p) if p else empty for p in (ys, ss, ms))
    return all_gather_arrays(worker, *parts)
