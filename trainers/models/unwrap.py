"""The model inside the wrappers training adds (DistributedDataParallel, torch.compile)."""
from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP's `.module` and torch.compile's `._orig_mod` so parameter names are the model's own
    (`blocks.0...`, not `module.blocks.0...`): LLRD and checkpoint keys depend on them."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
