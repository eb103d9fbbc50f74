"""Presets, the resolution rule and the classifiers (ViT with the paper's head, CNN baselines)."""
from __future__ import annotations

import logging

import pytest
import torch

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models import build_classifier, build_mae, resolve_model

TINY = ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8)


def test_presets_give_the_paper_sizes():
    small = resolve_model(ModelConfig(name="vit_small_patch16"))
    assert (small.embed_dim, small.depth, small.num_heads) == (384, 12, 6)
    assert (small.decoder_embed_dim, small.decoder_depth, small.decoder_num_heads) == (512, 2, 16)
    assert (small.img_size, small.patch_size, small.num_patches) == (224, 16, 196)
    base = resolve_model(ModelConfig(name="vit_base_patch16", decoder_depth=8))
    assert (base.embed_dim, base.depth, base.num_heads, base.decoder_depth) == (768, 12, 12, 8)


def test_given_fields_win_over_the_preset():
    tiny = resolve_model(TINY)
    assert (tiny.img_size, tiny.patch_size, tiny.embed_dim, tiny.depth, tiny.num_heads) == (64, 8, 64, 4, 2)
    assert resolve_model(ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, depth=2)).depth == 2
    # ModelConfig's img_size/patch_size/decoder defaults are values, so they are used as given
    default = resolve_model(ModelConfig(name="vit_tiny_test"))
    assert (default.img_size, default.patch_size, default.decoder_embed_dim) == (224, 16, 512)
    # a dump/re-load round trip resolves to the same model
    assert resolve_model(ModelConfig.model_validate(TINY.model_dump())) == tiny


def test_resolve_model_names_the_bad_field():
    with pytest.raises(ValueError, match="model.name='vit_huge'"):
        resolve_model(ModelConfig(name="vit_huge"))
    with pytest.raises(ValueError, match="model.embed_dim=64 is not a multiple of model.num_heads=3"):
        resolve_model(ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, num_heads=3))


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
    model = build_classifier(ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, global_pool="token"),
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
