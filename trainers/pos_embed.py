"""Fixed 2-D sine-cosine position embeddings (MAE) and their resizing to another patch grid.

Layout follows the reference MAE: the first half of the channels encodes a patch's column, the second
half its row, each half as [sin | cos] over D/4 frequencies 1 / 10000^(k / (D/4)). A class token's
position, when present, is all zeros and comes first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """positions: [M] -> [M, dim] as [sin | cos] (float64)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # [dim/2]
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # [M, dim/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # [M, dim]


def sincos_2d(embed_dim: int, grid_size: int, cls_token: bool = False) -> torch.Tensor:
    """Fixed embedding for a grid_size x grid_size patch grid: [(1 +) G*G, D] float32, row-major patches."""
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    # [G, G] each
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    emb = torch.cat([sincos_1d(embed_dim // 2, cols.flatten()),
                     sincos_1d(embed_dim // 2, rows.flatten())], dim=1)  # [G*G, D]
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)  # [1+G*G, D]
    return emb.float()


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_size: tuple[int, int],
                          num_prefix: int = 1) -> torch.Tensor:
    """Resize pos_embed [1, P + Gs*Gs, D] to [1, P + Gh*Gw, D] (bicubic over the grid; the P prefix
    tokens, i.e. the class token, are kept as they are). The source grid must be square."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]  # [1, P, D], [1, Gs*Gs, D]
    n, dim = patches.shape[1], patches.shape[2]
    src = round(n ** 0.5)
    if src * src != n:
        raise ValueError(f"pos_embed has {n} patch positions, not a square grid")
    if (src, src) == tuple(grid_size):
        return pos_embed
    grid = patches.reshape(1, src, src, dim).permute(0, 3, 1, 2).float()  # [1, D, Gs, Gs]
    grid = F.interpolate(grid, size=tuple(grid_size), mode="bicubic", align_corners=False)  # [1, D, Gh, Gw]
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # [1, Gh*Gw, D]
    return torch.cat([prefix, patches], dim=1)
