"""Pre-training schedules (cosine, constant, wsd) and the checks on continuing a checkpoint."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from thoraxmae.trainers.checkpoints import save_model
from thoraxmae.trainers.config import ModelConfig, PretrainConfig
from thoraxmae.trainers.continuation import PRETRAIN_STATE, continuation_files, pretrain_state
from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.optim import lr_at

TINY = ModelConfig(name="vit_tiny_test", depth=2)


def test_constant_schedule_does_not_depend_on_the_length():
    for e in (0.5, 1.0, 3.25, 7.9):
        assert lr_at(e, 1.0, 0.0, 2, 8, "constant") == lr_at(e, 1.0, 0.0, 2, 800, "constant")
    assert lr_at(1.0, 1.0, 0.0, 2, 8, "constant") == 0.5  # warm-up as in cosine
    assert lr_at(5.0, 1.0, 0.1, 2, 8, "constant") == 1.0
    assert lr_at(5.0, 1.0, 0.0, 2, 8, "cosine") != lr_at(5.0, 1.0, 0.0, 2, 16, "cosine")


def test_wsd_is_the_constant_schedule_then_a_linear_decay():
    for e in (0.5, 3.0, 5.99):  # before the decay starts at 8 - 2 = 6
        assert lr_at(e, 1.0, 0.1, 2, 8, "wsd", 2) == lr_at(e, 1.0, 0.1, 2, 8, "constant")
    assert lr_at(7.0, 1.0, 0.1, 2, 8, "wsd", 2) == pytest.approx(0.55)
    assert lr_at(8.0, 1.0, 0.1, 2, 8, "wsd", 2) == 0.1


@pytest.mark.parametrize(("fields", "match"), [
    ({"schedule": "wsd"}, "pretrain.decay_epochs=None: schedule wsd needs"),
    ({"schedule": "wsd", "decay_epochs": 10}, "pretrain.decay_epochs=10"),
    ({"decay_epochs": 2}, "pretrain.decay_epochs=2 applies only to schedule wsd"),
    ({"continue_from": "/x/checkpoint.pt"}, "pretrain.continue_from: a cosine schedule cannot be continued"),
])
def test_schedule_fields_are_checked(fields, match):
    with pytest.raises(ValidationError, match=match):
        PretrainConfig(epochs=10, warmup_epochs=1, **fields)


def test_a_constant_run_may_stop_inside_its_warm_up():
    assert PretrainConfig(epochs=1, warmup_epochs=5, schedule="constant").epochs == 1


def _checkpoint(tmp_path, cfg: PretrainConfig, epoch: int, model: ModelConfig = TINY):
    return save_model(tmp_path / "checkpoint.pt", {"cls_token": torch.zeros(1, 1, 4)}, optimizer={},
                      epoch=epoch,
                      model_config=model.model_dump(mode="json"), **{PRETRAIN_STATE: pretrain_state(cfg)})


def test_continuation_accepts_a_shorter_constant_run_of_the_same_recipe(tmp_path):
    ckpt = _checkpoint(tmp_path, PretrainConfig(epochs=2, warmup_epochs=1, schedule="constant"), 2)
    for later in (PretrainConfig(epochs=4, warmup_epochs=1, schedule="constant", continue_from=ckpt),
                  PretrainConfig(epochs=4, warmup_epochs=1, schedule="wsd", decay_epochs=2,
                                 continue_from=ckpt)):
        assert continuation_files(later, TINY)["checkpoint.pt"]["epoch"] == 2


@pytest.mark.parametrize(("written", "wanted", "match"), [
    ({"schedule": "cosine", "epochs": 2}, {"schedule": "constant", "epochs": 4},
     "written by a 'cosine' schedule"),
    ({"schedule": "constant", "epochs": 2}, {"schedule": "constant", "epochs": 2},
     "its epoch 2 cannot be continued"),
    ({"schedule": "constant", "epochs": 3}, {"schedule": "wsd", "epochs": 4, "decay_epochs": 2},
     "its epoch 3 cannot be continued"),
    ({"schedule": "constant", "epochs": 2, "mask_ratio": 0.75}, {"schedule": "constant", "epochs": 4},
     "pretrain.mask_ratio: 0.75 there, 0.9 here"),
])
def test_continuation_refuses_what_is_not_the_same_run(tmp_path, written, wanted, match):
    ckpt = _checkpoint(tmp_path, PretrainConfig(warmup_epochs=1, **written), written["epochs"])
    with pytest.raises(CheckpointError, match=match):
        continuation_files(PretrainConfig(warmup_epochs=1, continue_from=ckpt, **wanted), TINY)


def test_continuation_refuses_another_model(tmp_path):
    ckpt = _checkpoint(tmp_path, PretrainConfig(epochs=2, warmup_epochs=1, schedule="constant"), 2,
                       ModelConfig(name="vit_tiny_test", depth=1))
    with pytest.raises(CheckpointError, match="written for another model"):
        continuation_files(PretrainConfig(epochs=4, warmup_epochs=1, schedule="constant", continue_from=ckpt),
                           TINY)
