"""MAE pre-training as a Ray Train `train_loop_per_worker` (docs/paper.md recipe).

AdamW (0.9, 0.95), lr = blr * global batch / 256, per-iteration warm-up then `pretrain.schedule` (cosine,
constant or wsd; trainers.optim.lr_at), weight decay 0.05 (none on 1-D params, biases, tokens), bf16 autocast
on GPU, gradient accumulation. Reports `pretrain/loss` (mean masked-patch MSE) each epoch; a checkpoint every
`checkpoint_every` epochs and at the last, from which a restarted worker group resumes. A run with
`pretrain.continue_from` starts from an earlier run's checkpoint (trainers.continuation). Every epoch e
reseeds
from (seed, rank, e), so masks, crops and data order depend on the epoch only, never on where a run started.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from thoraxmae.datasets.loader import StoreDataset, make_loader
from thoraxmae.datasets.transforms import build_pretrain_transform
from thoraxmae.trainers import faults
from thoraxmae.trainers import reporting as R
from thoraxmae.trainers.continuation import PRETRAIN_STATE, continuation_files, pretrain_state
from thoraxmae.trainers.engine import Batch, train_epoch
from thoraxmae.trainers.jobs import PretrainJob
from thoraxmae.trainers.lineage import HISTORY_STATE, LINEAGE
from thoraxmae.trainers.models import build_mae, resolve_model
from thoraxmae.trainers.optim import param_groups
from thoraxmae.trainers.runtime import report, restore_files, seed_everything
from thoraxmae.trainers.session import resume, schedule, start_worker

log = logging.getLogger(__name__)
BETAS = (0.9, 0.95)  # docs/paper.md


def pretrain_loop(config: dict[str, Any]) -> None:
    job = PretrainJob.model_validate(config["job"])
    cfg, data = job.pretrain, job.data
    worker = start_worker(job.resources, cfg.seed)
    r = resolve_model(job.model)
    transform = build_pretrain_transform(r.img_size, cfg.crop_min, cfg.hflip, data.mean, data.std,
                                         data.in_chans)
    dataset = StoreDataset(data.store, data.train_split, transform)
    files = restore_files()
    if files is None and cfg.continue_from is not None:  # a new run continuing an earlier one's checkpoint
        files = continuation_files(cfg, job.model)
        LINEAGE.restart(files[R.CHECKPOINT_FILE].get(HISTORY_STATE, []))
        LINEAGE.unsent = False  # kept in this run's checkpoints; its reports are its own epochs only
    run = resume(build_mae(job.model, cfg.norm_pix_loss, cfg.mask_ratio),
                 lambda m: torch.optim.AdamW(param_groups(m, cfg.weight_decay, skip=frozenset()), lr=0.0,
                                             betas=BETAS),
                 job.resources, worker, cfg.seed, files)
    sched = schedule(cfg, worker)
    if worker.is_main:
        log.info("MAE pre-training %s: %d images, mask %.2f, lr %.3g, epochs %d-%d",
                 r.name, len(dataset), cfg.mask_ratio, sched.base_lr, run.start_epoch + 1, cfg.epochs)

    def loss_fn(m: torch.nn.Module, batch: Batch) -> torch.Tensor:
        loss, _, _ = m(batch[0])  # the model's mask ratio: pretrain.mask_ratio
        return loss

    for epoch in range(run.start_epoch, cfg.epochs):
        faults.fail("pretrain", epoch + 1, run.restored, config.get(faults.CONFIG_KEY, ""))
        if epoch > 0:  # epoch 0 draws on from the initial seeding, as a fresh run always has
            seed_everything(cfg.seed, worker.rank, epoch)
        loader = make_loader(dataset, batch_size=cfg.batch_size, train=True, seed=cfg.seed, epoch=epoch,
                             rank=worker.rank, world_size=worker.world_size, num_workers=data.num_workers)
        stats = train_epoch(run.model, loader, run.optimizer, loss_fn, epoch, sched, worker)
        done = epoch + 1
        metrics = {R.M_EPOCH: done, R.M_PRETRAIN_LOSS: stats.loss, R.M_LR: stats.lr,
                   R.M_EPOCH_TIME: stats.seconds,
                   R.M_THROUGHPUT: stats.images_per_s, run.clock.key: run.clock.hours()}
        checkpoint = done % cfg.checkpoint_every == 0 or done == cfg.epochs
        saved = None
        if checkpoint:
            state = run.state_dict(done, job.model, **{PRETRAIN_STATE: pretrain_state(cfg)})
            saved = {R.CHECKPOINT_FILE: state}
        report(worker, metrics, saved)
