"""The fine-tuning model, ViT or CNN baseline, chosen by model.name (docs/paper.md).

ViT: timm's VisionTransformer with the paper's head: global average pool over the patch tokens (class
token excluded) -> LayerNorm `fc_norm` -> linear `head` (init std 2e-5); with `global_pool="token"` the
class token goes through the final `norm` instead. Its parameter names match the MAE encoder's.
CNN baselines (DenseNet-121, ResNet-50): timm models, randomly initialised (no downloads), no DropPath
(the paper's DenseNet-121 baselines train without it).
"""
from __future__ import annotations

import logging

from torch import nn

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models.presets import ResolvedModel, resolve_model

logger = logging.getLogger(__name__)
HEAD_INIT_STD = 2e-5  # docs/paper.md / reference fine-tuning


def build_classifier(model: ModelConfig, num_classes: int, drop_path: float) -> nn.Module:
    """A classifier with `num_classes` outputs (logits); `drop_path` is finetune.drop_path."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    resolved = resolve_model(model)
    if resolved.kind == "vit":
        return build_vit_classifier(resolved, num_classes, drop_path)
    return build_cnn_classifier(resolved, num_classes, drop_path)


def build_vit_classifier(r: ResolvedModel, num_classes: int, drop_path: float) -> nn.Module:
    """A randomly initialised timm ViT whose parameter names match the MAE encoder's."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=r.img_size, patch_size=r.patch_size, in_chans=r.in_chans, num_classes=num_classes,
        embed_dim=r.embed_dim, depth=r.depth, num_heads=r.num_heads, mlp_ratio=r.mlp_ratio, qkv_bias=True,
        class_token=True, global_pool=r.global_pool, fc_norm=r.global_pool == "avg",
        drop_path_rate=drop_path,  # finetune.drop_path -> timm's drop_path_rate (the one translation point)
    )
    nn.init.trunc_normal_(model.head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.head.bias)
    return model


def build_cnn_classifier(r: ResolvedModel, num_classes: int, drop_path: float) -> nn.Module:
    """timm.create_model(r.name) with our class count and input channels; DropPath is not used."""
    import timm

    if drop_path:
        logger.warning("finetune.drop_path=%s is ignored for the CNN baseline %s", drop_path, r.name)
    return timm.create_model(r.name, pretrained=False, num_classes=num_classes, in_chans=r.in_chans)
