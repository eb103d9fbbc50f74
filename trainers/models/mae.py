"""Masked autoencoder (He et al., 2022) with a ViT encoder made of timm blocks.

The encoder sees only the visible patches; a lightweight decoder rebuilds every patch from the encoded
visible tokens plus a shared mask token; the loss is the pixel MSE on the masked patches only
(docs/paper.md: the paper keeps norm-pix loss off). Parameter names follow the reference MAE, so a state dict
of this model is a reference-format pre-trained checkpoint and its encoder keys are timm ViT keys.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from thoraxmae.trainers.config import ModelConfig, PretrainConfig
from thoraxmae.trainers.models.presets import VIT_FIELDS, preset_sizes, resolve_model
from thoraxmae.trainers.pos_embed import sincos_2d

DEFAULTS = PretrainConfig()  # the paper's mask ratio and norm-pix setting, written once in trainers/config.py


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches the encoder sees: floor(L * (1 - mask_ratio)), e.g. 19 of 196 at 0.9 (docs/paper.md), 49 at
    0.75.

    The reference computes `int(L * (1 - mask_ratio))` in floating point, which drops one patch when the
    product lands just under an integer (L=100, 0.9 -> 9.999... -> 9); the 1e-6 slack here keeps the
    exact value (10) and agrees with the reference everywhere else."""
    keep = int(num_patches * (1 - mask_ratio) + 1e-6)
    if keep < 1:
        raise ValueError(f"pretrain.mask_ratio={mask_ratio} leaves no visible patch of {num_patches}")
    return keep


class MaskedAutoencoderViT(nn.Module):
    """MAE with a ViT backbone; forward(imgs [N,C,H,W], mask_ratio) -> (loss, pred [N,L,p*p*C], mask [N,L]).

    Keyword sizes like the reference's constructor; `mae_vit_small_patch16(**kwargs)` and the other preset
    functions below fill them from a preset first. `mask_ratio` is the default of `forward`."""

    def __init__(self, *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 decoder_embed_dim: int, decoder_depth: int, decoder_num_heads: int, in_chans: int = 3,
                 mlp_ratio: float = 4.0, norm_pix_loss: bool = DEFAULTS.norm_pix_loss,
                 mask_ratio: float = DEFAULTS.mask_ratio):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size, self.in_chans, self.norm_pix_loss = patch_size, in_chans, norm_pix_loss
        self.mask_ratio = mask_ratio
        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True,
                                           norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)  # fixed
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio,
                                                   qkv_bias=True,
                                                   norm_layer=norm_layer) for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        self.initialize_weights(img_size // patch_size)

    def initialize_weights(self, grid_size: int) -> None:
        """Reference MAE init: fixed sin-cos positions, xavier-uniform linears (the patch projection
        treated as a linear), normal(0.02) class and mask tokens, unit LayerNorms."""
        self.pos_embed.data.copy_(sincos_2d(self.pos_embed.shape[-1], grid_size, cls_token=True)[None])
        self.decoder_pos_embed.data.copy_(sincos_2d(self.decoder_pos_embed.shape[-1], grid_size,
                                                    cls_token=True)[None])
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs [N, C, H, W] -> [N, L, p*p*C], each patch flattened as (row, column, channel)."""
        p, (n, c, h, w) = self.patch_size, imgs.shape
        x = imgs.reshape(n, c, h // p, p, w // p, p)  # [N, C, h, p, w, p]
        x = torch.einsum("nchpwq->nhwpqc", x)  # [N, h, w, p, p, C]
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, L, p*p*C] -> imgs [N, C, H, W] (square grid)."""
        p, c, n = self.patch_size, self.in_chans, x.shape[0]
        g = round(x.shape[1] ** 0.5)
        x = x.reshape(n, g, g, p, p, c)  # [N, h, w, p, p, C]
        x = torch.einsum("nhwpqc->nchpwq", x)  # [N, C, h, p, w, p]
        return x.reshape(n, c, g * p, g * p)

    def random_masking(self, x: torch.Tensor,
                       mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random num_visible(L, mask_ratio) patches per sample (argsort of uniform noise).

        x: [N, L, D] -> x_visible [N, L_keep, D], mask [N, L] (0 keep, 1 masked), ids_restore [N, L]."""
        n, length, dim = x.shape
        keep = num_visible(length, mask_ratio)
        noise = torch.rand(n, length, device=x.device)  # [N, L]
        ids_shuffle = torch.argsort(noise, dim=1)  # smallest noise first: those are kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)  # [N, L]
        ids_keep = ids_shuffle[:, :keep]  # [N, L_keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # [N, L_keep, D]
        mask = torch.ones(n, length, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # [N, L] in patch order
        return x_visible, mask, ids_restore

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [N, C, H, W] -> latent [N, 1 + L_keep, D], mask [N, L], ids_restore [N, L]."""
        x = self.patch_embed(imgs)  # [N, L, D]
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)  # x: [N, L_keep, D]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # [N, 1, D]
        x = torch.cat([cls, x], dim=1)  # [N, 1 + L_keep, D]
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [N, 1 + L_keep, D], ids_restore [N, L] -> pred [N, L, p*p*C] (class token dropped)."""
        x = self.decoder_embed(latent)  # [N, 1 + L_keep, Dd]
        n, length, dim = x.shape[0], ids_restore.shape[1], x.shape[2]
        # [N, L - L_keep, Dd]
        mask_tokens = self.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # [N, L, Dd], shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # patch order
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed  # [N, 1 + L, Dd]
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))  # [N, 1 + L, p*p*C]
        return x[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches only (per-patch normalised targets if norm_pix_loss)."""
        target = self.patchify(imgs).float()  # [N, L, p*p*C]
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(dim=-1)  # [N, L], per-patch MSE
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mask_ratio: None -> the model's own (pretrain.mask_ratio it was built with)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*C]
        return self.forward_loss(imgs, pred, mask), pred, mask


def build_mae(model: ModelConfig, norm_pix_loss: bool = DEFAULTS.norm_pix_loss,
              mask_ratio: float = DEFAULTS.mask_ratio) -> MaskedAutoencoderViT:
    """The MAE for `model` (a ViT preset, fields given override it); `norm_pix_loss` and `mask_ratio`
    are pretrain.norm_pix_loss and pretrain.mask_ratio (defaults: PretrainConfig's, the paper's)."""
    r = resolve_model(model)
    if r.kind != "vit":
        raise ValueError(f"model.name={model.name!r}: MAE pre-training needs a ViT")
    sizes = {f: getattr(r, f) for f in VIT_FIELDS}
    return MaskedAutoencoderViT(**sizes, in_chans=r.in_chans, mlp_ratio=r.mlp_ratio,
                                norm_pix_loss=norm_pix_loss,
                                mask_ratio=mask_ratio)


def mae_from_preset(name: str, **kwargs: Any) -> MaskedAutoencoderViT:
    """The preset's sizes, then `kwargs` (any MaskedAutoencoderViT keyword) override them."""
    return MaskedAutoencoderViT(**{**preset_sizes(name), **kwargs})


def mae_vit_small_patch16(**kwargs: Any) -> MaskedAutoencoderViT:
    """docs/paper.md: ViT-S/16 encoder, decoder 512-dim, 2 blocks, 16 heads (`..._dec512d2b`)."""
    return mae_from_preset("vit_small_patch16", **kwargs)


def mae_vit_base_patch16(**kwargs: Any) -> MaskedAutoencoderViT:
    """docs/paper.md: ViT-B/16 encoder, decoder 512-dim, 8 blocks, 16 heads (`..._dec512d8b`)."""
    return mae_from_preset("vit_base_patch16", **kwargs)
