"""Model presets by `model.name`, and the one rule that turns a ModelConfig into concrete sizes.

Resolution rule (`resolve_model`), as the reference's `mae_vit_base_patch16_dec512d8b(**kwargs)`: the
preset first, then every ModelConfig field that holds a value overrides it; a field left None (the
ModelConfig default for all sizes) takes the preset's value. So `name: vit_base_patch16` alone is the
paper's ViT-B/16 MAE with its 512-dim, 8-block decoder, and a config writes only what it changes. The
rule looks only at values, so a config that is dumped and re-loaded resolves to the same model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

logger = logging.getLogger(__name__)

VIT_FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads",
              "decoder_embed_dim", "decoder_depth", "decoder_num_heads")

# docs/paper.md: ViT-S/16 decoder 512-dim, 2 blocks, 16 heads; ViT-B/16 decoder 512-dim, 8 blocks, 16 heads.
PRESETS: dict[str, dict] = {
    "vit_small_patch16": {"kind": "vit", "img_size": 224, "patch_size": 16, "embed_dim": 384, "depth": 12,
                          "num_heads": 6, "decoder_embed_dim": 512, "decoder_depth": 2,
                          "decoder_num_heads": 16},
    "vit_base_patch16": {"kind": "vit", "img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12,
                         "num_heads": 12, "decoder_embed_dim": 512, "decoder_depth": 8,
                         "decoder_num_heads": 16},
    # a few-second-per-epoch model for tests and the demo on 2 CPU cores
    "vit_tiny_test": {"kind": "vit", "img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4,
                      "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
    "densenet121": {"kind": "cnn", "img_size": 224},
    "resnet50": {"kind": "cnn", "img_size": 224},
}


@dataclass(frozen=True)
class ResolvedModel:
    """Concrete sizes of one model; the ViT fields are None for a CNN."""

    name: str
    kind: Literal["vit", "cnn"]
    img_size: int
    in_chans: int
    global_pool: Literal["avg", "token"]
    mlp_ratio: float
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


def resolve_model(cfg: BaseModel) -> ResolvedModel:
    # cfg: a trainers.config.ModelConfig (not imported: config's validator calls this function)
    """Apply the resolution rule of this module's docstring; ValueError names the offending field."""
    if cfg.name not in PRESETS:
        raise ValueError(f"model.name={cfg.name!r} is not one of {sorted(PRESETS)}")
    preset = PRESETS[cfg.name]
    common = {"name": cfg.name, "kind": preset["kind"], "in_chans": cfg.in_chans,
              "global_pool": cfg.global_pool, "mlp_ratio": cfg.mlp_ratio}
    if preset["kind"] == "cnn":
        return ResolvedModel(img_size=preset["img_size"] if cfg.img_size is None else cfg.img_size, **common)
    sizes = {}
    for field in VIT_FIELDS:
        given = getattr(cfg, field)
        sizes[field] = preset[field] if given is None else given
        if given is not None and given != preset[field]:
            logger.debug("model.%s=%s overrides the %s preset's %s", field, given, cfg.name, preset[field])
    resolved = ResolvedModel(**common, **sizes)
    _check_divisible(resolved)
    return resolved


def preset_sizes(name: str) -> dict[str, int]:
    """The ViT sizes of a preset (the keyword arguments of MaskedAutoencoderViT)."""
    if name not in PRESETS or PRESETS[name]["kind"] != "vit":
        vits = sorted(k for k, v in PRESETS.items() if v["kind"] == "vit")
        raise ValueError(f"model.name={name!r} is not one of the ViT presets {vits}")
    return {k: PRESETS[name][k] for k in VIT_FIELDS}


def _check_divisible(r: ResolvedModel) -> None:
    pairs = [("img_size", "patch_size"), ("embed_dim", "num_heads"),
             ("decoder_embed_dim", "decoder_num_heads")]
    for num, den in pairs:
        if getattr(r, num) % getattr(r, den):
            raise ValueError(f"model.{num}={getattr(r, num)} is not a multiple of "
                             f"model.{den}={getattr(r, den)}")
    for field in ("embed_dim", "decoder_embed_dim"):
        if getattr(r, field) % 4:
            raise ValueError(f"model.{field}={getattr(r, field)} must be a multiple of 4 (2-D sin-cos "
                             "embedding)")
