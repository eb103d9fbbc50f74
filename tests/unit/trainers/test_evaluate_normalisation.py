"""`evaluate` normalises with the statistics the checkpoint declares (ours: `normalization`; a released file:
`args.norm_stats`, "imagenet" = ImageNet's per-channel mean/std on the gray image copied to RGB), or refuses
in
one line saying why; weights holding NaN are refused before any image is read."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.trainers.test_evaluate import TINY, finetuned, logits_on
from thoraxmae.datasets.config import IMAGENET_MEAN, IMAGENET_STD, NIH_MEAN, NIH_STD
from thoraxmae.trainers.checkpoint_files import CheckpointFile, open_checkpoint
from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.evaluate import check_options, evaluate_checkpoint, normalization_of


def released(model: torch.nn.Module, path: Path, **args) -> Path:
    """The paper's released layout: {'model', 'optimizer', 'epoch', 'scaler', 'args'} (docs/paper.md)."""
    namespace = argparse.Namespace(model="vit_small_patch16", input_size=64, nb_classes=14,
                                   dataset="chestxray",
                                   global_pool=True, **args)
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 74, "scaler": {}, "args": namespace},
               path)
    return path


def test_a_released_file_trained_with_imagenet_statistics_is_evaluated_with_them(phantom_store, tmp_path):
    model = finetuned(phantom_store)
    path = released(model, tmp_path / "imagenet.pth", norm_stats="imagenet")
    expected, _ = logits_on(model, phantom_store, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    nih, _ = logits_on(model, phantom_store)
    ev = evaluate_checkpoint(path, phantom_store, "test", bootstrap=0, batch_size=32)
    assert ev.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(ev.logits, expected, rtol=0, atol=1e-5)
    assert float(np.abs(ev.logits - nih).max()) > 0.05  # the NIH statistics would have given other outputs
    # the statistics can be named on the command line too, overriding what the file says
    forced = evaluate_checkpoint(path, phantom_store, "test", bootstrap=0, batch_size=32, norm_stats="nih")
    assert forced.normalization == (NIH_MEAN, NIH_STD)
    np.testing.assert_allclose(forced.logits, nih, rtol=0, atol=1e-5)


@pytest.mark.parametrize("declared, expected", [
    ({"norm_stats": "chestx-ray"}, (NIH_MEAN, NIH_STD)),  # the reference's name for the NIH statistics
    ({"norm_stats": None}, (NIH_MEAN, NIH_STD)),  # declares none: the paper's NIH statistics
    ({}, (NIH_MEAN, NIH_STD)),
    ({"norm_stats": "imagenet"}, (IMAGENET_MEAN, IMAGENET_STD)),
])
def test_the_statistics_a_released_file_declares(tmp_path, declared, expected):
    ck = CheckpointFile(tmp_path / "f.pth", "medical_mae",
                        {"model": {}, "args": argparse.Namespace(**declared)})
    assert normalization_of(ck, 3) == expected


@pytest.mark.parametrize("content, in_chans, message", [
    ({"args": argparse.Namespace(norm_stats="mimic")}, 3,
     (r"f.pth: its args.norm_stats='mimic' names statistics this evaluation does not know \(chestx-ray, nih, "
     r"imagenet\); pass --norm-stats")),
    ({"args": argparse.Namespace(norm_stats="imagenet")}, 1,
     r"f.pth: its args.norm_stats='imagenet' gives 3 mean values for a model that reads 1 channel\(s\)"),
    ({"normalization": {"mean": 0.5, "std": 0.0}}, 3, (r"f.pth: its `normalization` gives std=0.0; expected "
                                                       r"finite "
                                                      r"values and a std > 0")),
    ({"normalization": {"mean": float("nan"), "std": 0.2}}, 3, r"gives mean=nan; expected finite values$"),
    ({"normalization": {"mean": 0.5}}, 3, r"its `normalization` entry is dict .*expected \{'mean'"),
    ({"normalization": {"mean": "grey", "std": 0.2}}, 3, r"its `normalization` .* is not numbers"),
])
def test_statistics_that_cannot_be_honoured_are_refused_in_one_line(tmp_path, content, in_chans, message):
    ck = CheckpointFile(tmp_path / "f.pth", "medical_mae" if "args" in content else "thoraxmae",
                        {"model": {}, **content})
    with pytest.raises(CheckpointError, match=message) as info:
        normalization_of(ck, in_chans)
    assert "\n" not in str(info.value)


def test_our_files_per_channel_statistics_are_used_as_stored(tmp_path):
    ck = CheckpointFile(tmp_path / "f.pt", "thoraxmae", {"model": {},
                                                         "normalization": {"mean": [0.4, 0.5, 0.6],
                                                                           "std": [0.2, 0.2, 0.3]}})
    assert normalization_of(ck, 3) == ((0.4, 0.5, 0.6), (0.2, 0.2, 0.3))
    one = CheckpointFile(tmp_path / "f.pt", "thoraxmae",
                         {"model": {}, "normalization": {"mean": [0.4], "std": 0.2}})
    assert normalization_of(one, 1) == (0.4, 0.2)


def test_weights_holding_nan_are_refused_before_any_image_is_read(phantom_store, tmp_path):
    model = finetuned(phantom_store)
    state = model.state_dict()
    state["blocks.1.mlp.fc2.weight"][0, 0] = float("nan")
    state["head.bias"][2] = float("inf")
    path = tmp_path / "diverged.pt"
    torch.save({"model": state, "model_config": TINY.model_dump(), "label_names": ["x"]}, path)
    assert open_checkpoint(path).format == "thoraxmae"
    with pytest.raises(CheckpointError, match=r"diverged.pt: 2 of \d+ weight tensors hold NaN or infinite "
                                              r"values "
                                              r"\(e.g. blocks.1.mlp.fc2.weight, head.bias\)"):
        evaluate_checkpoint(path, tmp_path / "no-store-needed", "test")


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, r"batch_size=0: expected an integer >= 1"),
    ({"bootstrap": -5}, r"bootstrap=-5: expected an integer >= 0"),
    ({"num_workers": -1}, r"workers=-1: expected an integer >= 0"),
    ({"num_workers": True}, r"workers=True: expected an integer >= 0"),
    ({"device": "gpu7"}, r"device='gpu7': not a torch device"),
    ({"device": "meta"}, r"device='meta': evaluate runs on cpu, cuda or mps"),
    ({"norm_stats": "cifar"}, (r"norm_stats='cifar': expected one of \['auto', 'chestx-ray', 'nih', "
                              r"'imagenet'\]")),
])
def test_options_are_range_checked_before_any_file_is_read(kwargs, message):
    options = {"batch_size": 8, "bootstrap": 10, "num_workers": 0, "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message):
        check_options(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_is_refused_where_it_is_absent():
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available on this machine"):
        check_options(8, 10, 0, "cuda")
    with pytest.raises(ValueError, match=r"device='cuda:1': CUDA is not available"):
        check_options(8, 10, 0, "cuda:1")
