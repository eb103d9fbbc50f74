"""The ViT classifier for fine-tuning: timm's VisionTransformer with the paper's head (docs/paper.md).

Global average pool over the patch tokens (class token excluded) -> LayerNorm `fc_norm` -> linear `head`
(init std 2e-5). With `global_pool="token"` the class token goes through the final `norm` instead.
"""
from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from thoraxmae.trainers.models.presets import ResolvedModel

HEAD_INIT_STD = 2e-5  # docs/paper.md / reference fine-tuning


def build_vit_classifier(r: ResolvedModel, num_classes: int, drop_path: float) -> VisionTransformer:
    """A randomly initialised timm ViT whose parameter names match the MAE encoder's."""
    model = VisionTransformer(
        img_size=r.img_size, patch_size=r.patch_size, in_chans=r.in_chans, num_classes=num_classes,
        embed_dim=r.embed_dim, depth=r.depth, num_heads=r.num_heads, mlp_ratio=r.mlp_ratio, qkv_bias=True,
        class_token=True, global_pool=r.global_pool, fc_norm=r.global_pool == "avg",
        drop_path_rate=drop_path,  # finetune.drop_path -> timm's drop_path_rate (the one translation point)
    )
    nn.init.trunc_normal_(model.head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.head.bias)
    return model
