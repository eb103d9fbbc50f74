"""StoreDataset and make_loader: items, masks, rank sharding, per-epoch shuffles, determinism."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.loader import ShardSampler, StoreDataset, make_loader
from thoraxmae.datasets.store import open_store, prepare_store
from thoraxmae.datasets.table import SourceTable
from thoraxmae.datasets.transforms import build_eval_transform, build_pretrain_transform


@pytest.fixture(scope="module")
def masked_store(tmp_path_factory):
    """12 images (value 10 * i), 2 labels; image 3 has its second label masked out."""
    root = tmp_path_factory.mktemp("masked")
    rows = []
    for i in range(12):
        path = root / f"{i}.png"
        Image.fromarray(np.full((20, 20), 10 * i, np.uint8)).save(path)
        rows.append({"image_id": str(i), "path": str(path), "patient_id": str(i),
                     "split": "train" if i < 8 else
                     ("val" if i < 10 else "test"), "reader": "image"})
    labels = np.zeros((12, 2), np.float32)
    labels[:, 0] = np.arange(12) % 2
    labels[3, 1] = 1
    mask = np.ones((12, 2), np.uint8)
    mask[3, 1] = 0
    prepare_store(SourceTable("m", ("X", "Y"), pd.DataFrame(rows), labels, mask), root / "store", size=16,
                  progress=False)
    return root / "store"


def _eval(size=16, chans=3):
    return build_eval_transform(size, 0.5, 0.25, in_chans=chans)


def test_items_have_shapes_dtypes_labels_and_masks(masked_store):
    ds = StoreDataset(masked_store, "train", _eval(14))
    assert len(ds) == 8 and ds.label_names == ("X", "Y")
    image, labels, mask = ds[3]
    assert image.shape == (3, 14, 14) and image.dtype == torch.float32
    assert labels.dtype == torch.float32 and mask.dtype == torch.float32
    assert labels.tolist() == [1.0, 1.0] and mask.tolist() == [1.0, 0.0]
    torch.testing.assert_close(image, torch.full((3, 14, 14), (30 / 255 - 0.5) / 0.25), atol=1e-5, rtol=0)
    assert ds[2][2].tolist() == [1.0, 1.0]


def test_dataset_reads_only_its_split(masked_store):
    ds = StoreDataset(open_store(masked_store), "val", _eval())
    values = sorted(round(float(ds[i][0][0, 0, 0]) * 0.25 + 0.5, 3) for i in range(len(ds)))
    assert values == [round(80 / 255, 3), round(90 / 255, 3)]
    with pytest.raises(DataError, match="split 'holdout'"):
        StoreDataset(masked_store, "holdout", _eval())


@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (7, 1)])
def test_eval_shards_are_disjoint_and_cover_the_split(n, world):
    parts = [list(ShardSampler(n, train=False, rank=r, world_size=world)) for r in range(world)]
    assert sorted(i for p in parts for i in p) == list(range(n))
    assert [len(p) for p in parts] == [len(ShardSampler(n, train=False, rank=r, world_size=world))
                                       for r in range(world)]


@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (9, 2)])
def test_train_shards_are_disjoint_equal_and_cover_all_but_the_remainder(n, world):
    parts = [list(ShardSampler(n, train=True, seed=1, epoch=2, rank=r, world_size=world))
             for r in range(world)]
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) == n - n % world
    assert {len(p) for p in parts} == {n // world}


def test_train_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        return list(ShardSampler(100, train=True, seed=seed, epoch=epoch))

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(0, 1)) == list(range(100))
    sampler = ShardSampler(100, train=True, seed=0, epoch=0)
    sampler.set_epoch(1)
    assert list(sampler) == order(0, 1)


def test_loader_batches_and_rank_parts(phantom_store):
    ds = StoreDataset(phantom_store, "train", build_pretrain_transform(32, 0.5, True, 0.5, 0.25))
    seen = []
    for rank in range(2):
        loader = make_loader(ds, batch_size=16, train=True, seed=0, epoch=0, rank=rank, world_size=2)
        batches = list(loader)
        assert len(batches) == (len(ds) // 2) // 16  # drop_last
        images, labels, mask = batches[0]
        assert images.shape == (16, 3, 32, 32) and labels.shape == mask.shape == (16, 14)
        seen.append(list(loader.sampler))
    assert not set(seen[0]) & set(seen[1])
    eval_loader = make_loader(ds, batch_size=16, train=False)
    assert sum(len(b[0]) for b in eval_loader) == len(ds)


def test_loader_workers_repeat_their_augmentations(phantom_store):
    ds = StoreDataset(phantom_store, "val", build_pretrain_transform(32, 0.2, True, 0.5, 0.25))

    def first_batch(epoch):
        return next(iter(make_loader(ds, batch_size=4, train=True, seed=3, epoch=epoch, num_workers=1)))[0]

    a, b = first_batch(0), first_batch(0)
    assert torch.equal(a, b) and not torch.equal(a, first_batch(1))


def test_batch_larger_than_the_rank_part_is_an_error(masked_store):
    ds = StoreDataset(masked_store, "train", _eval())
    with pytest.raises(DataError, match="batch_size=8"):
        make_loader(ds, batch_size=8, train=True, world_size=2)
    with pytest.raises(DataError, match="rank=2"):
        make_loader(ds, batch_size=1, train=True, rank=2, world_size=2)
