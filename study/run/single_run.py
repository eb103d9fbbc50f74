"""One training run without search (`thoraxmae pretrain|finetune SPEC.yaml`), logged as role=run.

No Tune here: per-epoch metrics reach MLflow from a Ray Train callback on the Train controller.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import ray.train
from ray.train import UserCallback

from thoraxmae.datasets.storage import local_dir, ray_storage
from thoraxmae.study import schema
from thoraxmae.study.run.sweep import sweep_checkpoints
from thoraxmae.study.run.trial import scaling_config
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.writer import StudyTracker, schema_metrics, trial_params

log = logging.getLogger(__name__)


class EpochLogger(UserCallback):
    """Log each epoch's rank-0 report to one MLflow run (batch, step = epoch)."""

    def __init__(self, tracker: StudyTracker, run_id: str):
        self.tracker = tracker
        self.run_id = run_id

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        report = metrics[0]
        step = report.get(schema.M_EPOCH)
        if step is None:
            log.warning("report without `%s`; not logged: %s", schema.M_EPOCH, sorted(report))
            return
        self.tracker.log_epoch(self.run_id, schema_metrics(report), int(step))


def run_single(spec: StudySpec, phase: str) -> tuple[str, ray.train.Result]:
    """Train one phase of the spec with its fixed values; returns (MLflow run id, Train result).
    Ray must be initialised. A failed run is marked failed in MLflow and re-raised."""
    from thoraxmae.trainers import api

    cfg = spec.phase_config(phase)
    if phase == "finetune" and cfg.init is not None:  # `registry:<key>` -> the registered checkpoint
        from thoraxmae.study.registry import resolve_init

        cfg = cfg.model_copy(update={"init": resolve_init(spec.storage_path, cfg.init)})
    tracker = StudyTracker(spec)
    run_id = tracker.start_single(phase, trial_params(spec, {phase: cfg}))
    storage = StudyStorage(spec.storage_path).study(spec.name)
    run_config = ray.train.RunConfig(
        name=f"{spec.name}-{phase}-{time.strftime('%Y%m%d-%H%M%S')}",
        **ray_storage(storage),
        callbacks=[EpochLogger(tracker, run_id)],
        failure_config=ray.train.FailureConfig(max_failures=spec.resources.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1))
    if phase == "pretrain":
        job = api.PretrainJob(model=spec.model, data=spec.data_for(phase), pretrain=cfg)
        trainer = api.pretrain_trainer(job, scaling_config(spec), run_config)
    else:
        job = api.FinetuneJob(model=spec.model, data=spec.data_for(phase), finetune=cfg)
        trainer = api.finetune_trainer(job, scaling_config(spec), run_config)
    try:
        result = trainer.fit()
    except Exception as exc:
        tracker.end_trial(run_id, schema.STATUS_FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        sweep_checkpoints(storage / run_config.name)
    if result.checkpoint is not None:  # Ray names it inside the storage's filesystem
        with local_dir(storage.child_uri(result.checkpoint.path)) as local:
            tracker.log_checkpoint(run_id, local)
    tracker.log_auc_table(run_id, schema.M_VAL_MAUC, "max")
    tracker.end_trial(run_id, schema.STATUS_COMPLETED)
    return run_id, result
