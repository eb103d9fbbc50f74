"""What one training run needs, as one typed object per phase: the model, the store, the phase
config and the resources per worker. `trainers.api` turns a job into a Ray Train TorchTrainer; the
worker loop re-validates it from its plain-dict form on its first line."""
from __future__ import annotations

from pydantic import ConfigDict, Field

from thoraxmae.datasets.config import ConfigModel, DataConfig
from thoraxmae.trainers.config import FinetuneConfig, ModelConfig, PretrainConfig


class WorkerResources(ConfigModel):
    """Per Ray Train worker: what the cost clock multiplies by (and torch's CPU thread count)."""

    model_config = ConfigDict(extra="forbid")

    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class _Job(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig
    data: DataConfig
    resources: WorkerResources = WorkerResources()


class PretrainJob(_Job):
    pretrain: PretrainConfig


class FinetuneJob(_Job):
    finetune: FinetuneConfig
