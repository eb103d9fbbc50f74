"""Continuation at the trainer level, through real Ray Train: a constant-schedule pre-training run 0 -> 2 and
continued 2 -> 4 from its checkpoint equals one run 0 -> 4 with the same seed, bit for bit on CPU (weights,
AdamW state, and the `pretrain/loss` history)."""
from __future__ import annotations

from pathlib import Path

import pytest
import ray.train
import torch

from thoraxmae.datasets.config import DataConfig
from thoraxmae.trainers import reporting as R
from thoraxmae.trainers.api import PretrainJob, pretrain_trainer
from thoraxmae.trainers.config import ModelConfig, PretrainConfig
from thoraxmae.trainers.lineage import HISTORY_STATE

pytestmark = pytest.mark.integration
TINY = ModelConfig(name="vit_tiny_test", depth=2)


def _pretrain(store: Path, tmp_path: Path, name: str, **fields) -> dict:
    cfg = PretrainConfig(warmup_epochs=1, batch_size=16, blr=1e-3, mask_ratio=0.75, schedule="constant",
                         max_steps_per_epoch=3, seed=7, **fields)
    job = PretrainJob(model=TINY, data=DataConfig(store=store), pretrain=cfg)
    result = pretrain_trainer(job, ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                              ray.train.RunConfig(name=name, storage_path=str(tmp_path / "runs"))).fit()
    return torch.load(Path(result.checkpoint.path) / R.CHECKPOINT_FILE, weights_only=True)


def _losses(state: dict) -> list[tuple[int, float, float]]:
    return [(h[R.M_EPOCH], h[R.M_PRETRAIN_LOSS], h[R.M_LR]) for h in state[HISTORY_STATE]]


def test_constant_pretraining_continued_equals_one_straight_run(study_ray, phantom_store, tmp_path):
    straight = _pretrain(phantom_store, tmp_path, "straight", epochs=4)
    first = _pretrain(phantom_store, tmp_path, "first", epochs=2)
    ckpt = tmp_path / "runs" / "first-epoch2.pt"
    torch.save(first, ckpt)
    continued = _pretrain(phantom_store, tmp_path, "continued", epochs=4, continue_from=str(ckpt))

    assert continued["epoch"] == straight["epoch"] == 4
    assert [e for e, _, _ in _losses(continued)] == [1, 2, 3, 4]  # no epoch run twice, none missing
    assert _losses(continued) == _losses(straight)  # exact floats: loss and LR of every epoch
    assert _losses(continued)[:2] == _losses(first)
    assert straight["model"].keys() == continued["model"].keys()
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, continued["model"][name]), name
    for (i, a), (_, b) in zip(straight["optimizer"]["state"].items(),
                              continued["optimizer"]["state"].items(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]), i
    assert not torch.equal(first["model"]["cls_token"], continued["model"]["cls_token"])  # it did train on
