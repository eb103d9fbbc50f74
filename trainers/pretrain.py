"""MAE pre-training as a Ray Train `train_loop_per_worker` (FACTS.md recipe).

AdamW (0.9, 0.95), lr = blr * global batch / 256, per-iteration warm-up + cosine, weight decay 0.05
(none on 1-D params, biases, tokens), bf16 autocast on GPU, gradient accumulation. Reports
`pretrain/loss` (mean masked-patch MSE) each epoch; a checkpoint every `checkpoint_every` epochs and
at the last, from which a restarted worker group resumes.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from datasets.loader import StoreDataset, make_loader
from datasets.transforms import build_pretrain_transform
from trainers import reporting as R
from trainers.engine import Batch, Schedule, train_epoch
from trainers.jobs import PretrainJob
from trainers.models import build_mae, resolve_model, unwrap
from trainers.optim import absolute_lr, param_groups
from trainers.runtime import (
    CostClock,
    cpu_threads,
    current_worker,
    maybe_fail,
    prepare,
    report,
    restore_files,
    seed_everything,
)

log = logging.getLogger(__name__)
BETAS = (0.9, 0.95)  # FACTS.md


def pretrain_loop(config: dict[str, Any]) -> None:
    job = PretrainJob.model_validate(config["job"])
    cfg, data = job.pretrain, job.data
    cpu_threads(job.resources.cpus_per_worker)
    worker = current_worker()
    seed_everything(cfg.seed, worker.rank)
    r = resolve_model(job.model)
    transform = build_pretrain_transform(r.img_size, cfg.crop_min, cfg.hflip, data.mean, data.std, data.in_chans)
    dataset = StoreDataset(data.store, data.train_split, transform)

    model = build_mae(job.model, cfg.norm_pix_loss)
    files = restore_files()
    state = files[R.CHECKPOINT_FILE] if files else None
    if state is not None:
        model.load_state_dict(state["model"])
    model = prepare(model)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=0.0, betas=BETAS)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    start = int(state["epoch"]) if state else 0
    devices = job.resources.gpus_per_worker if worker.device.type == "cuda" else job.resources.cpus_per_worker
    clock = CostClock(worker, devices, float(state.get("cost_hours", 0.0)) if state else 0.0)
    lr = absolute_lr(cfg.blr, cfg.batch_size, cfg.accum_iter, worker.world_size)
    sched = Schedule(lr, cfg.min_lr, cfg.warmup_epochs, cfg.epochs, cfg.accum_iter, cfg.max_steps_per_epoch)
    if worker.is_main:
        log.info("MAE pre-training %s: %d images, mask %.2f, lr %.3g, epochs %d-%d",
                 r.name, len(dataset), cfg.mask_ratio, lr, start + 1, cfg.epochs)

    def loss_fn(m: torch.nn.Module, batch: Batch) -> torch.Tensor:
        loss, _, _ = m(batch[0], mask_ratio=cfg.mask_ratio)
        return loss

    for epoch in range(start, cfg.epochs):
        maybe_fail(job.fail_once_at_epoch, epoch + 1, restored=state is not None)
        loader = make_loader(dataset, batch_size=cfg.batch_size, train=True, seed=cfg.seed, epoch=epoch,
                             rank=worker.rank, world_size=worker.world_size, num_workers=data.num_workers)
        stats = train_epoch(model, loader, optimizer, loss_fn, epoch, sched, worker)
        done = epoch + 1
        metrics = {R.M_EPOCH: done, R.M_PRETRAIN_LOSS: stats.loss, R.M_LR: stats.lr,
                   R.M_EPOCH_TIME: stats.seconds, R.M_THROUGHPUT: stats.images_per_s, clock.key: clock.hours()}
        files_out = None
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            files_out = {R.CHECKPOINT_FILE: {
                "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": done,
                "cost_hours": clock.hours(), "model_config": job.model.model_dump(mode="json")}}
        report(worker, metrics, files_out)
