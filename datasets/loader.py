"""Loading a store split for training: a Dataset over one split and a rank-sharding sampler.

    ds = StoreDataset(store_path, "train", build_finetune_transform(224, 0.08, 6, True, NIH_MEAN, NIH_STD))
    loader = make_loader(ds, batch_size=128, train=True, seed=0, epoch=epoch, rank=rank, world_size=world)

Each of `world_size` ranks reads a disjoint part of the split; together they cover it (when the split
does not divide evenly, eval ranks get unequal parts and train ranks drop the remainder of the
shuffle). The order depends only on (seed, epoch), so every rank derives the same permutation.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.store_read import Store, open_store
from thoraxmae.datasets.transforms import XrayTransform

Transform = Callable[[np.ndarray], torch.Tensor]


class StoreDataset(Dataset):
    """One split of a store. Item: (image [C, H, W] float32, labels [K] float32, mask [K] float32)."""

    def __init__(self, store: Store | Path | str, split: str, transform: Transform):
        self.store = store if isinstance(store, Store) else open_store(store)
        self.split = split
        self.indices = self.store.split_indices(split)  # [n] int64 store rows
        if len(self.indices) == 0:
            raise DataError(f"{self.store.path}: split {split!r} is empty")
        self.transform = transform
        self.labels = torch.from_numpy(self.store.labels[self.indices].astype(np.float32))  # [n, K]
        self.mask = torch.from_numpy(self.store.mask[self.indices].astype(np.float32))  # [n, K]

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.store.label_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = int(self.indices[i])
        if isinstance(self.transform, XrayTransform):  # it may read the half-resolution copy (transforms.py)
            image = self.transform(*self.store.levels(row))  # [C, H, W]
        else:
            image = self.transform(self.store.image(row))
        return image, self.labels[i], self.mask[i]


class ShardSampler(Sampler[int]):
    """Positions of one rank's part of a dataset of `n` items.

    train: permute all n with a generator seeded by (seed, epoch), drop the tail so every rank gets
    n // world_size items, and deal them round-robin. eval: no shuffle, rank r gets r, r + W, ... (all
    items, parts differ by at most one).
    """

    def __init__(self, n: int, *, train: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                 world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank={rank} must lie in [0, world_size={world_size})")
        if train and n < world_size:
            raise DataError(f"{n} training items cannot be shared by world_size={world_size} ranks")
        self.n, self.train, self.seed, self.epoch = n, train, seed, epoch
        self.rank, self.world_size = rank, world_size

    def order(self) -> np.ndarray:
        if not self.train:
            return np.arange(self.rank, self.n, self.world_size)
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        usable = self.n - self.n % self.world_size
        return perm[self.rank:usable:self.world_size]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        end = self.n - (self.n % self.world_size if self.train else 0)
        return len(range(self.rank, end, self.world_size))


def make_loader(dataset: StoreDataset, *, batch_size: int, train: bool, seed: int = 0, epoch: int = 0,
                rank: int = 0,
                world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """A DataLoader over this rank's part of the split; shuffled per (seed, epoch) and drop_last when train.

    Worker processes seed `random` and numpy (the crops and RandAug draw from them) from a generator
    seeded by (seed, epoch, rank), so their augmentations repeat; with num_workers=0 the transforms use the
    calling process's `random` / numpy state.
    """
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be >= 1")
    sampler = ShardSampler(len(dataset), train=train, seed=seed, epoch=epoch, rank=rank,
                           world_size=world_size)
    if train and len(sampler) < batch_size:
        raise DataError(f"{dataset.store.path}: rank {rank}'s part of split {dataset.split!r} has "
                        f"{len(sampler)} images, fewer than batch_size={batch_size}; training drops "
                        "incomplete batches, so it would see none (lower the batch size)")
    generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, rank]).integers(2**62)))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=train,
                      num_workers=num_workers,
                      generator=generator)
