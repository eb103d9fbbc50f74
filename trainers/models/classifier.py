"""One entry point for the fine-tuning model, ViT or CNN, chosen by model.name."""
from __future__ import annotations

from torch import nn

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models.cnn import build_cnn_classifier
from thoraxmae.trainers.models.presets import resolve_model
from thoraxmae.trainers.models.vit import build_vit_classifier


def build_classifier(model: ModelConfig, num_classes: int, drop_path: float) -> nn.Module:
    """A classifier with `num_classes` outputs (logits); `drop_path` is finetune.drop_path."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    resolved = resolve_model(model)
    if resolved.kind == "vit":
        return build_vit_classifier(resolved, num_classes, drop_path)
    return build_cnn_classifier(resolved, num_classes, drop_path)
