"""CNN baselines (DenseNet-121, ResNet-50) from timm, randomly initialised (no downloads)."""
from __future__ import annotations

import logging

import timm
from torch import nn

from thoraxmae.trainers.models.presets import ResolvedModel

logger = logging.getLogger(__name__)


def build_cnn_classifier(r: ResolvedModel, num_classes: int, drop_path: float) -> nn.Module:
    """timm.create_model(r.name) with our class count and input channels; DropPath is not used
    (docs/paper.md: the DenseNet-121 baselines train without it)."""
    if drop_path:
        logger.warning("finetune.drop_path=%s is ignored for the CNN baseline %s", drop_path, r.name)
    return timm.create_model(r.name, pretrained=False, num_classes=num_classes, in_chans=r.in_chans)
