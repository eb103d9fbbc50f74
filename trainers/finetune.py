"""Multi-label (or COVIDx multi-class) fine-tuning as a Ray Train `train_loop_per_worker`.

docs/paper.md recipe: AdamW (0.9, 0.999), LLRD (`layer_decay`), DropPath, RandAug, crop scale, warm-up +
cosine per iteration to `min_lr`. BCE-with-logits masked by the label mask (U-Ignore labels carry 0)
for multi-label stores, cross-entropy for multi-class. Each epoch evaluates the validation split
(per-class AUC, mean AUC; accuracy for multi-class) and keeps the best-on-validation weights (chosen
by mean AUC, by accuracy for multi-class); after the last epoch those weights are evaluated on the
test split once, with bootstrap 95% CIs (resampling patients when the store has patient ids; `test/ci_unit`
says which). Checkpoints (every epoch) hold the training state and the best weights with the store's
class order and normalisation, so a restarted worker group resumes where it stopped and still tests the
right model, and `thoraxmae evaluate` rebuilds it. The LoadReport of `finetune.init` is logged, stored in
the checkpoints and reported (`init/load_report`, JSON) with the first epoch after a start and the last.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from thoraxmae.datasets.loader import ShardSampler, StoreDataset, make_loader
from thoraxmae.datasets.store_read import open_store
from thoraxmae.datasets.transforms import build_eval_transform, build_finetune_transform
from thoraxmae.trainers import faults
from thoraxmae.trainers import reporting as R
from thoraxmae.trainers.checkpoints import LoadReport, load_encoder
from thoraxmae.trainers.engine import Batch, predict, train_epoch
from thoraxmae.trainers.jobs import FinetuneJob
from thoraxmae.trainers.metrics import accuracy, auc_metrics, bootstrap_ci, mean_auc, per_class_auc
from thoraxmae.trainers.models import build_classifier, resolve_model
from thoraxmae.trainers.models.unwrap import unwrap  # the package's `unwrap` is its submodule once imported
from thoraxmae.trainers.optim import param_groups
from thoraxmae.trainers.runtime import Worker, report, restore_files, seed_everything
from thoraxmae.trainers.session import resume, schedule, start_worker

log = logging.getLogger(__name__)


def multilabel_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean BCE-with-logits over the unmasked (image, label) pairs."""
    images, labels, mask = batch
    per_label = F.binary_cross_entropy_with_logits(model(images).float(), labels, reduction="none")  # [B, K]
    return (per_label * mask).sum() / mask.sum().clamp_min(1.0)


def multiclass_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    images, labels, _ = batch
    return F.cross_entropy(model(images).float(), labels.argmax(dim=1))


def evaluate(model, loader, worker: Worker, multiclass: bool, prefix: str, names) -> tuple[dict, tuple]:
    """Metrics of one split under `prefix` ("val/" or "test/") and the raw (labels, scores, mask)."""
    y, s, m = predict(model, loader, worker, multiclass)
    aucs = per_class_auc(y, s, m)
    out = {f"{prefix}mauc": mean_auc(aucs), **auc_metrics(f"{prefix}auc/", names, aucs)}
    if multiclass:
        out[f"{prefix}acc"] = accuracy(y, s)
    return out, (y, s, m)


def preview_init(job: FinetuneJob) -> LoadReport | None:
    """What loading `finetune.init` into this job's classifier will do, on the caller's CPU and without Ray
    (a second for ViT-S): call it before a run starts to print the load report and to turn a file that
    does not fit into one CheckpointError line. None when the job has no init."""
    if job.finetune.init is None:
        return None
    names = open_store(job.data.store).label_names
    model = build_classifier(job.model, len(names), 0.0)
    return load_encoder(model, job.finetune.init, job.finetune.init_format, label_names=names)


def finetune_loop(config: dict[str, Any]) -> None:
    job = FinetuneJob.model_validate(config["job"])
    cfg, data = job.finetune, job.data
    worker = start_worker(job.resources, cfg.seed)
    r = resolve_model(job.model)
    store = open_store(data.store)
    names, multiclass = store.label_names, store.task == "multiclass"
    train_tf = build_finetune_transform(r.img_size, cfg.crop_min, cfg.randaug_magnitude, cfg.hflip,
                                        data.mean, data.std, data.in_chans)
    eval_tf = build_eval_transform(r.img_size, data.mean, data.std, data.in_chans)
    train_ds = StoreDataset(store, data.train_split, train_tf)
    val_ds = StoreDataset(store, data.val_split, eval_tf)
    has_test = len(store.split_indices(data.test_split)) > 0
    test_ds = StoreDataset(store, data.test_split, eval_tf) if has_test else None

    files = restore_files()
    model = build_classifier(job.model, len(names), cfg.drop_path)
    init_report = None
    if files is None and cfg.init is not None:  # a restarted run takes its weights from the checkpoint
        init_report = load_encoder(model, cfg.init, cfg.init_format, label_names=names).as_dict()
    run = resume(model,
                 lambda m: torch.optim.AdamW(param_groups(m, cfg.weight_decay, cfg.layer_decay), lr=0.0),
                 job.resources, worker, cfg.seed, files)
    init_report = run.saved("load_report", init_report)
    best_state = (run.files[R.BEST_MODEL_FILE]["model"] if run.files and R.BEST_MODEL_FILE in run.files
                  else None)
    best, best_epoch = float(run.saved("best_value", -math.inf)), int(run.saved("best_epoch", 0))
    select = R.M_VAL_ACC if multiclass else R.M_VAL_MAUC  # docs/paper.md: COVIDx is scored by accuracy
    about = {"label_names": list(names), "normalization": {"mean": data.mean, "std": data.std},
             "load_report": init_report}  # stored with every checkpoint (trainers.evaluate reads them)
    sched = schedule(cfg, worker)
    loss_fn = multiclass_loss if multiclass else multilabel_loss
    val_loader = make_loader(val_ds, batch_size=cfg.batch_size, train=False, rank=worker.rank,
                             world_size=worker.world_size, num_workers=data.num_workers)
    if worker.is_main:
        log.info("fine-tuning %s on %s: %d train / %d val images, %d labels, lr %.3g, epochs %d-%d", r.name,
                 store.path, len(train_ds), len(val_ds), len(names), sched.base_lr, run.start_epoch + 1,
                 cfg.epochs)

    for epoch in range(run.start_epoch, cfg.epochs):
        faults.fail("finetune", epoch + 1, run.restored, config.get(faults.CONFIG_KEY, ""))
        if epoch > 0:  # as in pre-training: a run resumed at any epoch draws what an uninterrupted one does
            seed_everything(cfg.seed, worker.rank, epoch)
        loader = make_loader(train_ds, batch_size=cfg.batch_size, train=True, seed=cfg.seed, epoch=epoch,
                             rank=worker.rank, world_size=worker.world_size, num_workers=data.num_workers)
        stats = train_epoch(run.model, loader, run.optimizer, loss_fn, epoch, sched, worker)
        val, _ = evaluate(run.model, val_loader, worker, multiclass, "val/", names)
        done = epoch + 1
        if math.isfinite(val[select]) and val[select] > best:
            best, best_epoch = val[select], done
            best_state = {k: v.detach().to("cpu", copy=True) for k,
                          v in unwrap(run.model).state_dict().items()}
        metrics = {R.M_EPOCH: done, R.M_TRAIN_LOSS: stats.loss, R.M_LR: stats.lr, **val,
                   R.M_BEST_EPOCH: best_epoch, R.M_EPOCH_TIME: stats.seconds,
                   R.M_THROUGHPUT: stats.images_per_s}
        if done == cfg.epochs and test_ds is not None:
            metrics.update(_test_once(run.model, best_state, test_ds, cfg, worker, multiclass, names,
                                      data.num_workers))
        if init_report is not None and (epoch == run.start_epoch or done == cfg.epochs):
            metrics[R.INIT_LOAD_REPORT] = json.dumps(init_report)
        metrics[run.clock.key] = run.clock.hours()
        out = {R.CHECKPOINT_FILE: run.state_dict(done, job.model, best_value=best, best_epoch=best_epoch,
                                                 **about)}
        if best_state is not None:
            out[R.BEST_MODEL_FILE] = {"model": best_state, "epoch": best_epoch, select: best,
                                      "model_config": job.model.model_dump(mode="json"), **about}
        report(worker, metrics, out)


def _test_once(model, best_state, test_ds: StoreDataset, cfg, worker: Worker, multiclass: bool, names,
               num_workers: int) -> dict:
    """Test metrics of the best-on-validation weights (the current ones if no epoch had a finite val
    score), evaluated on a copy so the training model and its checkpoint keep the last epoch's weights."""
    model = copy.deepcopy(unwrap(model))
    if best_state is not None:
        model.load_state_dict(best_state)
    loader = make_loader(test_ds, batch_size=cfg.batch_size, train=False, rank=worker.rank,
                         world_size=worker.world_size, num_workers=num_workers)
    test, (y, s, m) = evaluate(model, loader, worker, multiclass, "test/", names)
    if worker.is_main:
        ci = bootstrap_ci(y, s, m, cfg.bootstrap, seed=cfg.seed, multiclass=multiclass,
                          patient_ids=gathered_patient_ids(test_ds, worker.world_size))
        test.update(ci.metrics("test/", names))
        log.info("test %s: %.4f (95%% CI %.4f-%.4f, %d %ss resampled)", "mean AUC", test[R.M_TEST_MAUC],
                 ci.mauc[0], ci.mauc[1], ci.n_units, ci.unit)
    else:
        test[R.M_TEST_MAUC_CI_LOW], test[R.M_TEST_MAUC_CI_HIGH] = np.nan, np.nan
    return test


def gathered_patient_ids(ds: StoreDataset, world_size: int) -> np.ndarray:
    """Patient ids in the order `predict` gathers a split evaluated on `world_size` ranks (rank by rank,
    each rank's ShardSampler order)."""
    positions = np.concatenate([ShardSampler(len(ds), train=False, rank=r, world_size=world_size).order()
                                for r in range(world_size)])
    return ds.store.patient_ids[ds.indices][positions]
