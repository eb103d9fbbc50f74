"""thoraxmae trainers: MAE pre-training and multi-label fine-tuning of ViTs (and CNN baselines) as Ray
Train workers. trainers never import study; each loop runs from its own typed job.

Public surface (lazy, so `import trainers` stays light):
- configs: `ModelConfig`, `PretrainConfig`, `FinetuneConfig` (trainers.config); jobs `PretrainJob`,
  `FinetuneJob` (trainers.jobs)
- `pretrain_trainer(job, scaling, run_config)`, `finetune_trainer(...)` -> TorchTrainer (trainers.api)
- `pretrain_loop`, `finetune_loop`: the train_loop_per_worker functions
- models: `build_mae`, `build_classifier`; checkpoints: `check_checkpoint` (format of a file, cheap),
  `load_encoder` (-> LoadReport), `read_checkpoint`, `CheckpointError`
- `evaluate_checkpoint(checkpoint, store, split)` -> Evaluation (trainers.evaluate)
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "thoraxmae.trainers.config", "PretrainConfig": "thoraxmae.trainers.config",
    "FinetuneConfig": "thoraxmae.trainers.config",
    "PretrainJob": "thoraxmae.trainers.jobs", "FinetuneJob": "thoraxmae.trainers.jobs",
    "pretrain_trainer": "thoraxmae.trainers.api", "finetune_trainer": "thoraxmae.trainers.api",
    "pretrain_loop": "thoraxmae.trainers.pretrain", "finetune_loop": "thoraxmae.trainers.finetune",
    "build_mae": "thoraxmae.trainers.models", "build_classifier": "thoraxmae.trainers.models",
    "load_encoder": "thoraxmae.trainers.checkpoints", "read_checkpoint": "thoraxmae.trainers.checkpoints",
    "check_checkpoint": "thoraxmae.trainers.checkpoint_files", "LoadReport": "thoraxmae.trainers.checkpoints",
    "evaluate_checkpoint": "thoraxmae.trainers.evaluate",
    "CheckpointError": "thoraxmae.trainers.errors",
}
__all__ = [
    "CheckpointError", "FinetuneConfig", "FinetuneJob", "LoadReport", "ModelConfig", "PretrainConfig",
    "PretrainJob", "build_classifier", "build_mae", "check_checkpoint", "evaluate_checkpoint",
    "finetune_loop", "finetune_trainer", "load_encoder", "pretrain_loop", "pretrain_trainer",
    "read_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
