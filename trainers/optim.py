"""Optimizer parameter groups (weight-decay split, layer-wise LR decay) and the LR schedule.

Layer-wise LR decay (LLRD, docs/paper.md: 0.55 in the paper's ViT-S fine-tuning): with depth blocks there are
num_layers = depth + 1 layers; cls_token / pos_embed / patch_embed are layer 0, blocks.i is layer i + 1,
everything else (fc_norm, head, norm, an MAE decoder) is layer num_layers; a parameter's LR is multiplied
by layer_decay ** (num_layers - layer_id). ViT-S, 0.55: embeddings 0.55**13 ~ 4.2e-4, last block 0.55,
head 1.0. The loops apply the scale each step with `set_lr(optimizer, lr_at(...))`.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from thoraxmae.trainers.models.unwrap import unwrap

logger = logging.getLogger(__name__)

# Fine-tuning exempts the ViT's tokens/embeddings (timm's no_weight_decay()); MAE pre-training decays
# cls_token and mask_token like the reference code and exempts only 1-D parameters and biases (docs/paper.md).
NO_WEIGHT_DECAY = frozenset({"pos_embed", "cls_token", "dist_token"})


def layer_id(name: str, num_layers: int) -> int:
    """LLRD layer of a ViT parameter name (see module docstring)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed."):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


def _no_decay(name: str, param: torch.Tensor, skip: frozenset[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or name in skip


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 skip: frozenset[str] = NO_WEIGHT_DECAY) -> list[dict]:
    """Groups for torch.optim.AdamW: each has "params", "weight_decay" (0 on biases, 1-D parameters and
    the names in `skip`, by default the tokens/embeddings of NO_WEIGHT_DECAY), "lr_scale" (LLRD; 1.0 without
    layer_decay) and "layer_id".
    Frozen parameters (the MAE's fixed position embeddings) are left out. A model without `blocks`
    (a CNN) has no layers: layer_decay is ignored there with a warning. DDP / compiled wrappers are
    looked through."""
    model = unwrap(model)
    blocks = getattr(model, "blocks", None)
    if layer_decay is not None and not isinstance(blocks, nn.Sequential | nn.ModuleList):
        logger.warning("finetune.layer_decay=%s is ignored for %s (no ViT blocks)", layer_decay,
                       type(model).__name__)
        layer_decay = None
    num_layers = len(blocks) + 1 if layer_decay is not None else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, num_layers) if layer_decay is not None else 0
        no_decay = _no_decay(name, param, skip)
        group = groups.setdefault((lid, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay, "layer_id": lid,
            "lr_scale": layer_decay ** (num_layers - lid) if layer_decay is not None else 1.0})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def lr_at(epoch: float, base_lr: float, min_lr: float, warmup: float, total: float, schedule: str = "cosine",
          decay: float = 0.0) -> float:
    """LR at a fractional epoch (step / steps_per_epoch), after a linear warm-up from 0 to base_lr over
    `warmup`
    epochs (docs/paper.md):
    - "cosine" (the paper's): half-cosine from base_lr down to min_lr at `total` epochs (min_lr afterwards);
    - "constant": base_lr from the end of warm-up on; `total` plays no part, so the weights at epoch e are the
      same whatever length the run was meant to have (horizon-free, docs/paper.md "Anytime schedules");
    - "wsd" (warm-up, stable, decay): constant until `total - decay`, then linear from base_lr to min_lr at
      `total`. Up to `total - decay` it is the constant schedule, so a wsd run is a branch of a constant
      one."""
    if epoch < warmup:
        return base_lr * epoch / warmup
    if schedule == "constant":
        return base_lr
    if schedule == "wsd":
        start = total - decay
        if epoch < start:
            return base_lr
        return min_lr if epoch >= total else base_lr + (min_lr - base_lr) * (epoch - start) / decay
    if epoch >= total or total <= warmup:
        return min_lr
    progress = (epoch - warmup) / (total - warmup)  # in [0, 1)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's LR to lr times its "lr_scale" (1.0 when a group has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def absolute_lr(blr: float, batch_size: int, accum_iter: int, workers: int) -> float:
    """docs/paper.md: lr = blr * global_batch / 256, global batch = per-worker batch * accumulation *
    workers."""
    return blr * batch_size * accum_iter * workers / 256
