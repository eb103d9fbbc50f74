"""Jobs -> Ray Train TorchTrainers. The caller (study/, or a user's script) owns the RunConfig
(name, storage, callbacks, failure policy) and the ScalingConfig (workers, CPUs/GPUs per worker).

    trainer = pretrain_trainer(PretrainJob(model=..., data=..., pretrain=...), ScalingConfig(num_workers=2),
                               ray.train.RunConfig(name="mae", storage_path="/abs/runs"))
    result = trainer.fit()   # result.checkpoint holds checkpoint.pt (and best_model.pt after fine-tuning)
"""
from __future__ import annotations

import ray.train
from ray.train.torch import TorchTrainer

from thoraxmae.trainers import faults
from thoraxmae.trainers.finetune import finetune_loop
from thoraxmae.trainers.jobs import FinetuneJob, PretrainJob, WorkerResources
from thoraxmae.trainers.pretrain import pretrain_loop

__all__ = ["FinetuneJob", "PretrainJob", "finetune_trainer", "pretrain_trainer"]


def _with_resources(job, scaling: ray.train.ScalingConfig):
    per_worker = scaling.resources_per_worker or {}
    gpus = float(per_worker.get("GPU", 1.0 if scaling.use_gpu else 0.0))
    cpus = float(per_worker.get("CPU", 1.0))
    return job.model_copy(update={"resources": WorkerResources(cpus_per_worker=cpus, gpus_per_worker=gpus)})


def _loop_config(job) -> dict:
    """The job as a plain dict, and the test-only faults active here (trainers.faults; empty for users)."""
    return {"job": job.model_dump(mode="json"), faults.CONFIG_KEY: faults.active()}


def pretrain_trainer(job: PretrainJob, scaling: ray.train.ScalingConfig, run_config: ray.train.RunConfig
                     ) -> TorchTrainer:
    job = _with_resources(job, scaling)
    return TorchTrainer(pretrain_loop, train_loop_config=_loop_config(job),
                        scaling_config=scaling, run_config=run_config)


def finetune_trainer(job: FinetuneJob, scaling: ray.train.ScalingConfig, run_config: ray.train.RunConfig
                     ) -> TorchTrainer:
    job = _with_resources(job, scaling)
    return TorchTrainer(finetune_loop, train_loop_config=_loop_config(job),
                        scaling_config=scaling, run_config=run_config)
