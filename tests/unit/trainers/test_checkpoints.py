"""Checkpoint saving and loading: our format, the paper's released format, plain timm state dicts."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

from thoraxmae.trainers.checkpoints import load_encoder, read_checkpoint, save_model
from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.models import build_classifier, build_mae
from thoraxmae.trainers.pos_embed import interpolate_pos_embed

TINY = ModelConfig(name="vit_tiny_test", depth=2)  # 64 px, patch 8; the preset's 32-dim 1-block decoder
HEAD = {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}


@pytest.fixture(scope="module")
def mae_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_mae(TINY, norm_pix_loss=False).state_dict()


def test_thoraxmae_pretrain_checkpoint_into_classifier(tmp_path, mae_state):
    path = save_model(tmp_path / "ck" / "checkpoint.pt", mae_state, epoch=3, best_metric=0.5)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temp file left
    model = build_classifier(TINY, num_classes=14, drop_path=0.1)
    report = load_encoder(model, path, fmt="thoraxmae")
    assert report.missing == HEAD and report.format == "thoraxmae" and report.head == "absent"
    assert report.dropped == {k for k in mae_state if k.startswith(("decoder_", "mask_token", "norm."))}
    assert report.loaded == set(mae_state) - report.dropped
    assert "mask_token" in report.dropped and not report.resized_pos_embed
    assert torch.equal(model.blocks[1].attn.qkv.weight, mae_state["blocks.1.attn.qkv.weight"])
    assert torch.equal(model.pos_embed, mae_state["pos_embed"])


def test_medical_mae_file_with_a_pickled_namespace_loads_safely(tmp_path, mae_state):
    path = tmp_path / "vit-s_CXR_0.3M_mae.pth"
    args = argparse.Namespace(model="mae_vit_small_patch16_dec512d2b", mask_ratio=0.9, norm_pix_loss=False)
    torch.save({"model": mae_state, "optimizer": {}, "epoch": 799, "scaler": {}, "args": args}, path)
    with pytest.raises(Exception, match="Namespace"):  # the plain safe loader refuses it ...
        torch.load(path, weights_only=True)
    model = build_classifier(TINY, num_classes=14, drop_path=0.2)
    report = load_encoder(model, path, fmt="medical_mae")  # ... the one-type allow-list accepts it
    assert report.missing == HEAD
    assert torch.equal(model.patch_embed.proj.weight, mae_state["patch_embed.proj.weight"])
    assert read_checkpoint(path, "medical_mae")["args"].mask_ratio == 0.9
    assert load_encoder(model, path).format == "medical_mae"  # auto (the default) recognises it
    with pytest.raises(CheckpointError, match=r"vit-s_CXR_0.3M_mae.pth: is a medical_mae checkpoint .*not "
                                              r"thoraxmae"):
        load_encoder(model, path, fmt="thoraxmae")  # an explicit format must be the file's


def test_pos_embed_is_resized_from_64_to_96_px(tmp_path, mae_state):
    path = save_model(tmp_path / "mae64.pt", mae_state)
    model = build_classifier(ModelConfig(**{**TINY.model_dump(), "img_size": 96}), num_classes=3,
                             drop_path=0.0)
    report = load_encoder(model, path, fmt="thoraxmae")
    assert report.pos_embed_grid == ((8, 8), (12, 12)) and report.missing == HEAD
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 64)
    assert torch.equal(model.pos_embed[0, 0], mae_state["pos_embed"][0, 0])  # class token kept
    grid = mae_state["pos_embed"][:, 1:].reshape(1, 8, 8, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False)
    assert torch.allclose(model.pos_embed[0, 1:], expected.permute(0, 2, 3, 1).reshape(144, 64), atol=1e-6)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 3)


def test_interpolation_keeps_a_constant_grid_constant():
    # [1, 17, 4]
    pos = torch.cat([torch.full((1, 1, 4), 7.0), torch.ones(1, 16, 4) * torch.arange(4.0)], dim=1)
    out = interpolate_pos_embed(pos, (6, 6))
    assert out.shape == (1, 37, 4) and torch.equal(out[0, 0], torch.full((4,), 7.0))
    assert torch.allclose(out[0, 1:], torch.arange(4.0).expand(36, -1), atol=1e-5)


def test_timm_state_dict_between_classifiers_drops_a_head_of_another_shape(tmp_path):
    source = build_classifier(TINY, num_classes=14, drop_path=0.0)
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    model = build_classifier(TINY, num_classes=3, drop_path=0.0)
    report = load_encoder(model, path, fmt="timm")
    assert report.missing == {"head.weight", "head.bias"} == report.dropped and report.head == "dropped"
    assert torch.equal(model.fc_norm.weight, source.fc_norm.weight)
    same = build_classifier(TINY, num_classes=14, drop_path=0.0)
    assert load_encoder(same, path, fmt="timm").missing == frozenset()


def test_bad_files_raise_checkpoint_error_naming_the_file(tmp_path, mae_state):
    model = build_classifier(TINY, num_classes=2, drop_path=0.0)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\x00\x01")
    with pytest.raises(CheckpointError, match="garbage.pth: cannot be read as a checkpoint"):
        load_encoder(model, garbage, fmt="thoraxmae")
    with pytest.raises(CheckpointError, match="nowhere.pth: no such checkpoint file"):
        load_encoder(model, tmp_path / "nowhere.pth", fmt="medical_mae")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth: not a checkpoint of a known format .*found a list"):
        load_encoder(model, tmp_path / "list.pth", fmt="thoraxmae")
    torch.save({"state_dict": mae_state}, tmp_path / "nomodel.pth")
    with pytest.raises(CheckpointError, match=r"nomodel.pth: .*found a dict with keys \['state_dict'\] and "
                                              r"no 'model'"):
        load_encoder(model, tmp_path / "nomodel.pth", fmt="thoraxmae")
    with pytest.raises(CheckpointError, match="unknown checkpoint format 'pytorch'"):
        load_encoder(model, garbage, fmt="pytorch")


def test_key_and_shape_problems_name_the_keys(tmp_path, mae_state):
    model = build_classifier(TINY, num_classes=2, drop_path=0.0)
    partial = {k: v for k, v in mae_state.items() if k != "blocks.0.norm1.weight"}
    with pytest.raises(CheckpointError, match=r"partial.pt .*missing keys: \['blocks.0.norm1.weight'\]"):
        load_encoder(model, save_model(tmp_path / "partial.pt", partial), fmt="thoraxmae")
    foreign = {**mae_state, "blocks.9.attn.qkv.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="does not have: \\['blocks.9.attn.qkv.weight'\\]"):
        load_encoder(model, save_model(tmp_path / "foreign.pt", foreign), fmt="thoraxmae")
    wider = build_mae(ModelConfig(**{**TINY.model_dump(), "embed_dim": 32}), norm_pix_loss=False).state_dict()
    with pytest.raises(CheckpointError,
                       match="wide.pt.*blocks.0.attn.qkv.weight: file \\(96, 32\\) vs model \\(192, 64\\)"):
        load_encoder(model, save_model(tmp_path / "wide.pt", wider), fmt="thoraxmae")


def test_a_training_checkpoint_round_trips_under_the_safe_loader(tmp_path):
    from thoraxmae.trainers.optim import param_groups

    model = build_classifier(TINY, num_classes=2, drop_path=0.0)
    opt = torch.optim.AdamW(param_groups(model, 0.05, layer_decay=0.75), lr=1e-3)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    path = save_model(tmp_path / "checkpoint.pt", model.state_dict(), optimizer=opt.state_dict(), epoch=4,
                      scaler={}, best_metric=0.71)
    ck = read_checkpoint(path, "thoraxmae")
    assert (ck["epoch"], ck["best_metric"], sorted(ck)) == (4, 0.71, ["best_metric", "epoch", "model",
                                                                      "optimizer", "scaler"])
    fresh = torch.optim.AdamW(param_groups(model, 0.05, layer_decay=0.75), lr=1e-3)
    fresh.load_state_dict(ck["optimizer"])
    assert fresh.param_groups[0]["lr_scale"] == pytest.approx(0.75**3)
    assert torch.equal(fresh.state[model.cls_token]["exp_avg"], opt.state[model.cls_token]["exp_avg"])
