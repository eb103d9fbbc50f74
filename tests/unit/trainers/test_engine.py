"""One training epoch without Ray: LR per optimizer step, gradient accumulation, DDP no_sync, NaN guard."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from thoraxmae.trainers.engine import Schedule, train_epoch
from thoraxmae.trainers.runtime import Worker

CPU = Worker(rank=0, world_size=1, device=torch.device("cpu"))


def loader(n: int = 8, batch: int = 2) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x.sum(1, keepdim=True) > 0).float()
    return DataLoader(TensorDataset(x, y, torch.ones_like(y)), batch_size=batch)


def bce(model, batch):
    x, y, _ = batch
    return torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)


class CountingAdamW(torch.optim.AdamW):
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.steps, self.lrs = 0, []

    def step(self, closure=None):
        self.steps += 1
        self.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize(("accum", "steps"), [(1, 4), (2, 2), (3, 2)])
def test_accumulation_steps_the_optimizer_once_per_accum_batches(accum, steps):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = CountingAdamW(model.parameters(), lr=0.0)
    stats = train_epoch(model, loader(), opt, bce, 0, Schedule(1e-2, 0.0, 0, 2, accum), CPU)
    assert opt.steps == steps and stats.images == 8 and stats.loss > 0
    assert opt.lrs[0] == pytest.approx(1e-2)  # no warm-up: the cosine starts at base_lr
    assert all(a >= b for a, b in zip(opt.lrs, opt.lrs[1:], strict=False))  # consecutive pairs


def test_max_steps_caps_the_epoch():
    model = torch.nn.Linear(4, 1)
    opt = CountingAdamW(model.parameters(), lr=0.0)
    stats = train_epoch(model, loader(), opt, bce, 0, Schedule(1e-2, 0.0, 0, 1, 1, max_steps_per_epoch=3),
                        CPU)
    assert opt.steps == 3 and stats.images == 6


def test_non_finite_loss_stops_with_the_step():
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        train_epoch(model, loader(), opt, lambda m, b: m(b[0]).sum() * float("nan"), 0,
                    Schedule(1e-3, 0, 0, 1), CPU)


def test_ddp_with_accumulation_uses_no_sync_and_trains():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
        opt = CountingAdamW(model.parameters(), lr=0.0)
        before = model.module.weight.detach().clone()
        stats = train_epoch(model, loader(), opt, bce, 0, Schedule(1e-2, 0.0, 0, 1, 2), CPU)
        assert opt.steps == 2 and stats.images == 8
        assert not torch.equal(before, model.module.weight)
    finally:
        dist.destroy_process_group()
