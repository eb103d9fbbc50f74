"""Models: the MAE (pre-training), the ViT classifier and CNN baselines (fine-tuning), and presets.

Lazy, so trainers/config.py can check a ModelConfig against the presets without importing torch/timm."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_classifier": "thoraxmae.trainers.models.classifier",
    "MaskedAutoencoderViT": "thoraxmae.trainers.models.mae", "build_mae": "thoraxmae.trainers.models.mae",
    "num_visible": "thoraxmae.trainers.models.mae", "mae_vit_small_patch16": "thoraxmae.trainers.models.mae",
    "mae_vit_base_patch16": "thoraxmae.trainers.models.mae",
    "PRESETS": "thoraxmae.trainers.models.presets", "ResolvedModel": "thoraxmae.trainers.models.presets",
    "resolve_model": "thoraxmae.trainers.models.presets",
    "unwrap": "thoraxmae.trainers.models.unwrap",
}
__all__ = [
    "PRESETS", "MaskedAutoencoderViT", "ResolvedModel", "build_classifier", "build_mae",
    "mae_vit_base_patch16", "mae_vit_small_patch16", "num_visible", "resolve_model", "unwrap",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'thoraxmae.trainers.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
