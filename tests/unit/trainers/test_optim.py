"""Layer-wise LR decay groups, the weight-decay split and the warm-up + cosine schedule."""
from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models import build_classifier, build_mae
from thoraxmae.trainers.optim import lr_at, param_groups, set_lr


def scales_by_name(model, groups) -> dict[str, tuple[float, float]]:
    """name -> (lr_scale, weight_decay); each trainable parameter must sit in exactly one group."""
    where = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in where
            where[id(p)] = (group["lr_scale"], group["weight_decay"])
    return {n: where[id(p)] for n, p in model.named_parameters() if id(p) in where}


def test_llrd_on_vit_small_matches_the_paper():
    model = build_classifier(ModelConfig(name="vit_small_patch16"), num_classes=14, drop_path=0.0)
    table = scales_by_name(model, param_groups(model, weight_decay=0.05, layer_decay=0.55))
    assert len(table) == len(list(model.parameters()))
    # docs/paper.md: embeddings get ~4.2e-4 of the LR (0.55 ** 13), last block 0.55, head 1.0
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        assert table[name][0] == pytest.approx(0.55**13) and table[name][0] == pytest.approx(4.2e-4, rel=0.02)
    assert table["blocks.0.attn.qkv.weight"][0] == pytest.approx(0.55**12)
    assert table["blocks.11.mlp.fc2.weight"][0] == pytest.approx(0.55)
    assert table["head.weight"][0] == table["fc_norm.weight"][0] == 1.0
    decayed = {n for n, (_, wd) in table.items() if wd == 0.05}
    assert {n for n in table if n not in decayed} == {
        n for n in table if n.endswith(".bias") or "norm" in n or n in ("cls_token", "pos_embed")}
    assert "blocks.3.attn.qkv.weight" in decayed and "head.weight" in decayed


def test_without_layer_decay_every_scale_is_one_and_frozen_params_are_left_out():
    mae = build_mae(ModelConfig(name="vit_tiny_test", img_size=32, patch_size=8, depth=2),
                    norm_pix_loss=False)
    groups = param_groups(mae, weight_decay=0.05, skip=frozenset())  # as MAE pre-training builds them
    table = scales_by_name(mae, groups)
    assert {scale for scale, _ in table.values()} == {1.0}
    assert "pos_embed" not in table and "decoder_pos_embed" not in table  # fixed sin-cos
    # the reference MAE decays its tokens ([1, 1, D]) in pre-training; only 1-D params and biases are exempt
    assert table["mask_token"][1] == 0.05 and table["cls_token"][1] == 0.05
    assert table["norm.weight"][1] == 0.0 and table["blocks.0.attn.qkv.bias"][1] == 0.0
    assert table["decoder_pred.weight"][1] == 0.05
    assert len(table) == sum(p.requires_grad for p in mae.parameters())


def test_layer_decay_is_ignored_for_cnns(caplog):
    model = build_classifier(ModelConfig(name="resnet50"), num_classes=3, drop_path=0.0)
    with caplog.at_level(logging.WARNING):
        groups = param_groups(model, weight_decay=0.05, layer_decay=0.55)
    assert "finetune.layer_decay" in caplog.text
    assert {g["lr_scale"] for g in groups} == {1.0}
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05]


def test_set_lr_applies_each_groups_scale():
    model = build_classifier(ModelConfig(name="vit_tiny_test", img_size=32, patch_size=8, depth=2), 2, 0.0)
    opt = torch.optim.AdamW(param_groups(model, 0.05, layer_decay=0.5), lr=1.0)
    set_lr(opt, 1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([1e-3 * 0.5**3, 1e-3 * 0.5**2,
                                                                        1e-3 * 0.5, 1e-3])


@pytest.mark.parametrize(("epoch", "expected"), [
    (0.0, 0.0),                                # start of warm-up
    (2.5, 5e-4),                               # half-way through warm-up
    (5.0, 1e-3),                               # end of warm-up: the base LR
    (40.0, (1e-3 + 1e-5) / 2),                 # middle of the cosine
    (40.0 + 35.0 / 3, 1e-5 + (1e-3 - 1e-5) * 0.25),  # a third of the way past the middle: cos(2pi/3)
    (75.0, 1e-5),                              # end: the floor
    (80.0, 1e-5),                              # past the end
])
def test_lr_at_warmup_then_cosine(epoch, expected):
    assert (lr_at(epoch, base_lr=1e-3, min_lr=1e-5, warmup=5, total=75)
            == pytest.approx(expected, rel=1e-9, abs=1e-15))


def test_lr_at_is_continuous_and_decreasing_after_warmup():
    steps = [lr_at(5 + i * 0.01, 1e-3, 0.0, 5, 75) for i in range(7001)]
    assert all(a >= b for a, b in itertools.pairwise(steps))
    assert lr_at(0.0, 1.5e-4, 0.0, warmup=0, total=800) == 1.5e-4
    assert lr_at(400.0, 2.0, 0.0, warmup=0, total=800) == pytest.approx(1.0)
    assert math.isclose(lr_at(4.999999, 1.0, 0.0, 5, 75), lr_at(5.0, 1.0, 0.0, 5, 75), rel_tol=1e-5)


def test_wrapped_models_get_the_same_groups():
    model = build_classifier(ModelConfig(name="vit_tiny_test", img_size=32, patch_size=8, depth=2), 2, 0.0)
    plain = [(g["lr_scale"], g["weight_decay"], len(g["params"])) for g in param_groups(model, 0.05, 0.5)]
    compiled = torch.compile(model)  # lazy: nothing is compiled until called
    assert [(g["lr_scale"], g["weight_decay"], len(g["params"]))
            for g in param_groups(compiled, 0.05, 0.5)] == plain
    # layers 0..3 (embeddings, 2 blocks, head), each with a decayed and a non-decayed group
    assert plain == [(0.125, 0.05, 1), (0.125, 0.0, 3), (0.25, 0.05, 4), (0.25, 0.0, 8),
                     (0.5, 0.05, 4), (0.5, 0.0, 8), (1.0, 0.05, 1), (1.0, 0.0, 3)]
