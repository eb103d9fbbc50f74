"""MAE: masking counts, visible-only encoder, patch layout, reference key names, loss behaviour."""
from __future__ import annotations

import re

import pytest
import torch

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models import build_mae, num_visible
from thoraxmae.trainers.pos_embed import sincos_2d

# 32 px, patch 8 -> a 4x4 grid (L=16); 64 px -> 8x8 (L=64)
TINY = ModelConfig(name="vit_tiny_test", img_size=32, depth=2)  # preset decoder: 32-dim, 1 block, 2 heads


def structured_images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth images (sums of random ramps and blobs), identical in the 3 channels: [n, 3, size, size]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    a, b, c = (torch.rand(n, 1, 1, generator=g) * 2 - 1 for _ in range(3))
    img = a * xx + b * yy + c * torch.exp(-(xx**2 + yy**2) * 4)  # [n, size, size]
    return img[:, None].expand(-1, 3, -1, -1).contiguous()


# docs/paper.md: 19 of 196 patches visible at mask 0.9 (196 * 0.1 = 19.6 truncated); 49 at 0.75
@pytest.mark.parametrize(("length", "ratio", "visible"), [
    (196, 0.9, 19), (196, 0.75, 49), (196, 0.85, 29), (196, 0.5, 98), (64, 0.9, 6), (64, 0.75, 16),
    (100, 0.9, 10),
])
def test_num_visible_truncates_like_the_reference(length, ratio, visible):
    assert num_visible(length, ratio) == visible


def test_num_visible_rejects_a_ratio_that_hides_everything():
    with pytest.raises(ValueError, match="pretrain.mask_ratio"):
        num_visible(4, 0.9)


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_random_masking_keeps_exactly_the_visible_patches(ratio):
    torch.manual_seed(0)
    mae = build_mae(ModelConfig(**{**TINY.model_dump(), "img_size": 64}), norm_pix_loss=False)
    x = torch.randn(3, 64, 8)  # [N, L, D]
    visible, mask, ids_restore = mae.random_masking(x, ratio)
    keep = num_visible(64, ratio)
    assert visible.shape == (3, keep, 8)
    assert mask.sum(dim=1).tolist() == [64 - keep] * 3
    for i in range(3):  # the kept tokens are exactly the unmasked ones, in some order
        expected = x[i][mask[i] == 0]
        assert torch.equal(visible[i][visible[i][:, 0].argsort()], expected[expected[:, 0].argsort()])
    assert torch.equal(ids_restore.sort(dim=1).values, torch.arange(64).expand(3, -1))
    assert not torch.equal(mask[0], mask[1])  # per-sample noise


def test_encoder_runs_on_visible_tokens_only():
    torch.manual_seed(0)
    mae = build_mae(TINY, norm_pix_loss=False)
    seen = []
    mae.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    latent, mask, ids_restore = mae.forward_encoder(torch.randn(2, 3, 32, 32), mask_ratio=0.75)
    assert seen == [(2, 1 + 4, 64)]  # class token + 4 of 16 patches
    assert latent.shape == (2, 5, 64) and mask.shape == (2, 16) and ids_restore.shape == (2, 16)
    pred = mae.forward_decoder(latent, ids_restore)
    assert pred.shape == (2, 16, 8 * 8 * 3)


def test_patchify_layout_and_round_trip():
    mae = build_mae(TINY, norm_pix_loss=False)
    imgs = torch.randn(2, 3, 32, 32)
    patches = mae.patchify(imgs)  # [2, 16, 192]
    assert patches.shape == (2, 16, 192)
    # patch 1 is row 0, column 1; flattened as (row, column, channel)
    assert torch.equal(patches[:, 1], imgs[:, :, 0:8, 8:16].permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(mae.unpatchify(patches), imgs)


def test_state_dict_uses_reference_names_and_fixed_sincos():
    mae = build_mae(TINY, norm_pix_loss=False)
    pattern = re.compile(
        r"(cls_token|pos_embed|mask_token|decoder_pos_embed|patch_embed\.proj\.(weight|bias)"
        r"|(decoder_)?blocks\.\d+\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
        r"|(norm|decoder_embed|decoder_norm|decoder_pred)\.(weight|bias))")
    keys = list(mae.state_dict())
    assert [k for k in keys if not pattern.fullmatch(k)] == []
    assert len(keys) == 4 + 2 + 12 * 2 + 2 + 12 * 1 + 6
    assert not mae.pos_embed.requires_grad and not mae.decoder_pos_embed.requires_grad
    assert torch.equal(mae.pos_embed[0, 0], torch.zeros(64))  # class token position
    omega = 1.0 / 10000 ** (torch.arange(16, dtype=torch.float64) / 16)
    # token 2 = patch (row 0, column 1): first quarter sin(1 * omega), third quarter sin(0) = 0
    assert torch.allclose(mae.pos_embed[0, 2, :16].double(), torch.sin(omega), atol=1e-6)
    assert torch.equal(mae.pos_embed[0, 2, 32:48], torch.zeros(16))
    assert torch.equal(mae.pos_embed[0, 1:], sincos_2d(64, 4))


def test_init_follows_mae():
    torch.manual_seed(0)
    mae = build_mae(ModelConfig(name="vit_small_patch16", depth=1), norm_pix_loss=False)
    qkv = mae.blocks[0].attn.qkv.weight  # xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    assert qkv.abs().max() <= (6 / (384 + 3 * 384)) ** 0.5 and qkv.abs().max() > 0.9 * (6 / (384 * 4)) ** 0.5
    assert torch.equal(mae.decoder_pred.bias, torch.zeros(768))
    assert 0.015 < mae.mask_token.std() < 0.025 and 0.015 < mae.cls_token.std() < 0.025


def test_loss_counts_masked_patches_only():
    mae = build_mae(TINY, norm_pix_loss=False)
    imgs = torch.randn(2, 3, 32, 32)
    target = mae.patchify(imgs)
    mask = torch.zeros(2, 16)
    mask[:, :5] = 1
    pred = target.clone()
    pred[:, 5:] += 10.0  # wrong only where visible
    assert mae.forward_loss(imgs, pred, mask).item() == 0.0
    pred[:, :5] += 2.0  # off by 2 on every masked pixel
    assert mae.forward_loss(imgs, pred, mask).item() == pytest.approx(4.0)


def test_norm_pix_loss_normalises_each_patch_target():
    torch.manual_seed(0)
    mae = build_mae(TINY, norm_pix_loss=True)
    imgs = structured_images(2) * 5 + 3
    target = mae.patchify(imgs)
    normed = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = torch.ones(2, 16)
    assert mae.forward_loss(imgs, normed, mask).item() == pytest.approx(0.0, abs=1e-8)
    torch.manual_seed(1)
    with_norm = mae(imgs, mask_ratio=0.75)[0].item()
    mae.norm_pix_loss = False
    torch.manual_seed(1)
    without = mae(imgs, mask_ratio=0.75)[0].item()
    assert without > 5 * with_norm  # raw pixels of mean 3 are far from the ~0 init prediction


def test_loss_decreases_with_adamw():
    torch.manual_seed(0)
    mae = build_mae(TINY, norm_pix_loss=False)
    imgs = structured_images(8)
    opt = torch.optim.AdamW(mae.parameters(), lr=2e-3, betas=(0.9, 0.95))

    def fixed_mask_loss() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return mae(imgs, mask_ratio=0.75)[0].item()

    before = fixed_mask_loss()
    for _ in range(25):
        loss, _, _ = mae(imgs, mask_ratio=0.75)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_mask_loss()
    assert after < 0.5 * before, (before, after)


def test_bf16_autocast_keeps_the_loss_in_float32():
    torch.manual_seed(0)
    mae = build_mae(TINY, norm_pix_loss=False)
    imgs = structured_images(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = mae(imgs, mask_ratio=0.9)
    assert loss.dtype == torch.float32 and pred.shape == (2, 16, 192) and mask.sum().item() == 2 * 15
    loss.backward()
    assert mae.blocks[0].attn.qkv.weight.grad is not None
    torch.manual_seed(0)
    build_mae(TINY, norm_pix_loss=False)  # replay the init draws, so the masks below are the same
    full, _, full_mask = mae(imgs, mask_ratio=0.9)
    assert torch.equal(full_mask, mask) and loss.item() == pytest.approx(full.item(), rel=0.05)


def test_build_mae_needs_a_vit():
    with pytest.raises(ValueError, match="model.name='densenet121'"):
        build_mae(ModelConfig(name="densenet121"), norm_pix_loss=False)
