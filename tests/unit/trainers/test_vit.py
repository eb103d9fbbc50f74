"""Presets, the resolution rule and the classifiers (ViT with the paper's head, CNN baselines)."""
from __future__ import annotations

import logging

import pytest
import torch

from thoraxmae.trainers.config import ModelConfig, PretrainConfig
from thoraxmae.trainers.models import (
    build_classifier,
    build_mae,
    mae_vit_base_patch16,
    mae_vit_small_patch16,
    resolve_model,
)

TINY = ModelConfig(name="vit_tiny_test")  # the preset: 64 px, patch 8, 64-dim, depth 4


def test_presets_give_the_paper_sizes():
    small = resolve_model(ModelConfig(name="vit_small_patch16"))
    assert (small.embed_dim, small.depth, small.num_heads) == (384, 12, 6)
    assert (small.decoder_embed_dim, small.decoder_depth, small.decoder_num_heads) == (512, 2, 16)
    assert (small.img_size, small.patch_size, small.num_patches) == (224, 16, 196)
    base = resolve_model(ModelConfig(name="vit_base_patch16"))  # docs/paper.md: dec512d8b, nothing re-typed
    assert (base.embed_dim, base.depth, base.num_heads) == (768, 12, 12)
    assert (base.decoder_embed_dim, base.decoder_depth, base.decoder_num_heads) == (512, 8, 16)
    assert resolve_model(ModelConfig(name="densenet121")).img_size == 224


def test_the_vit_b_mae_has_an_8_block_decoder():
    mae = build_mae(ModelConfig(name="vit_base_patch16"))
    assert len(mae.decoder_blocks) == 8 and len(mae.blocks) == 12
    assert mae.decoder_embed.out_features == 512 and mae.decoder_blocks[0].attn.num_heads == 16
    assert len(mae_vit_base_patch16().decoder_blocks) == 8
    assert len(mae_vit_small_patch16().decoder_blocks) == 2


def test_given_fields_win_over_the_preset():
    tiny = resolve_model(TINY)
    assert (tiny.img_size, tiny.patch_size, tiny.embed_dim, tiny.depth, tiny.num_heads) == (64, 8, 64, 4, 2)
    assert (tiny.decoder_embed_dim, tiny.decoder_depth, tiny.decoder_num_heads) == (32, 1, 2)
    assert resolve_model(ModelConfig(name="vit_tiny_test", depth=2)).depth == 2
    base = resolve_model(ModelConfig(name="vit_base_patch16", decoder_depth=4, img_size=448))
    assert (base.decoder_depth, base.decoder_embed_dim, base.img_size, base.num_patches) == (4, 512, 448, 784)
    assert len(mae_vit_base_patch16(decoder_depth=2, img_size=64).decoder_blocks) == 2  # keywords override
    # a dump/re-load round trip resolves to the same model
    assert resolve_model(ModelConfig.model_validate(TINY.model_dump())) == tiny


def test_a_model_config_that_does_not_resolve_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="model.name='vit_huge' is not one of"):
        ModelConfig(name="vit_huge")
    with pytest.raises(ValueError, match="model.embed_dim=64 is not a multiple of model.num_heads=3"):
        ModelConfig(name="vit_tiny_test", num_heads=3)
    with pytest.raises(ValueError, match="model.img_size=100 is not a multiple of model.patch_size=16"):
        ModelConfig(name="vit_small_patch16", img_size=100)


def test_the_mae_masks_with_its_configured_ratio_by_default():
    torch.manual_seed(0)
    mae = build_mae(TINY, mask_ratio=0.5)  # 64 patches -> 32 visible
    _, _, mask = mae(torch.randn(2, 3, 64, 64))
    assert mask.sum(dim=1).tolist() == [32.0, 32.0]
    _, _, mask = mae(torch.randn(2, 3, 64, 64), mask_ratio=0.75)
    assert mask.sum(dim=1).tolist() == [48.0, 48.0]
    assert build_mae(TINY).mask_ratio == PretrainConfig().mask_ratio == 0.9  # docs/paper.md


def test_vit_classifier_has_the_paper_head():
    torch.manual_seed(0)
    model = build_classifier(TINY, num_classes=14, drop_path=0.2)
    keys = set(model.state_dict())
    assert {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"} <= keys
    assert not any(k.startswith("norm.") for k in keys)
    assert model.head.weight.std().item() < 4e-5 and torch.equal(model.head.bias, torch.zeros(14))
    model.eval()
    x = torch.randn(3, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (3, 14)
    tokens = model.forward_features(x)  # [3, 1 + 64, 64]
    pooled = model.fc_norm(tokens[:, 1:].mean(dim=1))  # average of patch tokens, class token excluded
    assert torch.allclose(logits, model.head(pooled), atol=1e-6)


def test_drop_path_reaches_the_blocks():
    model = build_classifier(TINY, num_classes=2, drop_path=0.2)
    rates = [block.drop_path1.drop_prob if hasattr(block.drop_path1, "drop_prob") else 0.0
             for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.2 / 3, 0.4 / 3, 0.2])  # timm: linear in depth up to drop_path
    assert not hasattr(build_classifier(TINY, 2, drop_path=0.0).blocks[-1].drop_path1, "drop_prob")


def test_classifier_keys_are_the_mae_encoder_keys():
    mae_keys = set(build_mae(TINY, norm_pix_loss=False).state_dict())
    clf_keys = set(build_classifier(TINY, 14, 0.1).state_dict())
    encoder = {k for k in mae_keys if not k.startswith(("decoder_", "mask_token", "norm."))}
    assert clf_keys - encoder == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert encoder <= clf_keys


def test_token_pool_uses_the_final_norm():
    model = build_classifier(ModelConfig(name="vit_tiny_test", global_pool="token"),
                             num_classes=5, drop_path=0.0)
    keys = set(model.state_dict())
    assert "norm.weight" in keys and not any(k.startswith("fc_norm.") for k in keys)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize("name", ["densenet121", "resnet50"])
def test_cnn_baselines(name, caplog):
    with caplog.at_level(logging.WARNING):
        model = build_classifier(ModelConfig(name=name, in_chans=1), num_classes=14, drop_path=0.1)
    assert "finetune.drop_path" in caplog.text
    model.eval()
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 14)


def test_shipped_configs_take_their_geometry_from_the_presets():
    from pathlib import Path

    import yaml

    root = Path(__file__).parents[3] / "configs"
    models = {p.name: yaml.safe_load(p.read_text())["model"] for p in sorted(root.glob("*.yaml"))}
    for name, model in models.items():
        assert not {"img_size", "patch_size", "decoder_depth", "decoder_num_heads"} & set(model), name
    paper = resolve_model(ModelConfig(**models["paper-pretrain.yaml"]))  # mae_vit_small_patch16_dec512d2b
    assert ((paper.img_size, paper.patch_size, paper.embed_dim, paper.depth, paper.num_heads)
            == (224, 16, 384, 12, 6))
    assert (paper.decoder_embed_dim, paper.decoder_depth, paper.decoder_num_heads) == (512, 2, 16)
