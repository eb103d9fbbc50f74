"""Loader throughput: the reference input path vs the prepared store, side by side on the same images.

    .venv/bin/python benchmarks/loader.py [--images 64] [--epochs 2] [--repeats 3] [--batch 32] [--store-size
    768 ...]
        [--store s3://bucket/bench/nih768]

(a) reference: decode a 1024x1024 PNG with PIL, convert to RGB, timm's training transform
    (create_transform(224, is_training=True, auto_augment="rand-m6-mstd0.5-inc1", interpolation="bicubic"):
    random resized crop (0.08, 1), flip, RandAug m6) — what the paper's code does for every image of
    every epoch;
(b) ours: the same images prepared once into a store (shorter side <= --store-size, the `data prepare`
    default), read memory-mapped, our fine-tuning transform (the same ops on the gray image, 224 output;
    tests/unit/datasets/test_transform_parity.py shows it gives the reference's pixels), once per
    --half-margins value: the half copy serves crops holding >= that many times the output's pixels
    across in it (the default, datasets/transforms.py HALF_COPY_MARGIN, and the old 1.0 beside it).
Both run through a DataLoader (batch 32, no worker processes) in one process on one thread; the
figures are images per CPU second of that process (= per core; a machine shared with other jobs does
not lower them much), with the wall-clock rates alongside. (a) and (b) alternate `--repeats` times and
the medians are reported. Also printed: the store's disk size,
scaled to 100,000 images. The 1024 px phantom PNGs are generated in a temp dir first.
(c) with --store URI (an object store; endpoint and credentials from the AWS_* / GOOGLE_* environment):
    the first --store-size store is uploaded there, then read as a study's workers read it
    (datasets.remote: fetched into an empty node-local cache, checked, memory-mapped). Printed in wall-clock
    images/s: the first epoch (fetch included), the steady state (later epochs), and (b)'s wall-clock rate.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from thoraxmae.datasets.config import NIH_MEAN, NIH_STD
from thoraxmae.datasets.loader import StoreDataset, make_loader
from thoraxmae.datasets.phantom import generate_phantom
from thoraxmae.datasets.resolution import DEFAULT_SIZE
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.store import prepare_store
from thoraxmae.datasets.transforms import HALF_COPY_MARGIN, build_finetune_transform, randaug_config

IMG_SIZE, SOURCE_SIZE, MAGNITUDE = 224, 1024, 6


class ReferenceDataset(Dataset):
    """PNG files decoded on every access, timm's RGB training transform."""

    def __init__(self, paths: list[str]):
        from timm.data import create_transform

        self.paths = paths
        self.transform = create_transform(IMG_SIZE, is_training=True, auto_augment=randaug_config(MAGNITUDE),
                                          interpolation="bicubic", re_prob=0, mean=(NIH_MEAN,) * 3,
                                          std=(NIH_STD,) * 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))  # [3, 224, 224]


def images_per_second(loader: DataLoader, epochs: int) -> tuple[float, float]:
    """(images per CPU second of this process, images per wall-clock second). With one thread and no
    worker processes the first is the per-core rate, whatever else the machine runs at the time."""
    n, cpu, wall = 0, time.process_time(), time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images = batch[0] if isinstance(batch, list | tuple) else batch
            assert images.shape[1:] == (3, IMG_SIZE, IMG_SIZE)
            n += len(images)
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def remote_rates(local_store_dir: Path, args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    """(first-epoch, steady-state) wall-clock images/s reading the store from args.store into an empty
    cache."""
    from thoraxmae.datasets.remote import upload_store

    upload_store(local_store_dir, args.store)
    os.environ["THORAXMAE_CACHE_DIR"] = str(tmp / "cache")  # empty: the first epoch fetches
    transform = build_finetune_transform(IMG_SIZE, 0.08, MAGNITUDE, True, NIH_MEAN, NIH_STD)
    start = time.perf_counter()
    loader = make_loader(StoreDataset(args.store, "train", transform), batch_size=args.batch, train=True)
    n = sum(len(batch[0]) for batch in loader)
    first = n / (time.perf_counter() - start)
    steady = statistics.median(images_per_second(loader, args.epochs)[1] for _ in range(args.repeats))
    return first, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path, alternating")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--store-size", type=int, nargs="+", default=[DEFAULT_SIZE],
                        help="store side(s) to measure (default: the `data prepare` default, "
                             f"{DEFAULT_SIZE})")
    parser.add_argument("--half-margins", type=float, nargs="+", default=[HALF_COPY_MARGIN, 1.0],
                        help="half-copy margins to measure (default: the transforms' and the old 1.0)")
    parser.add_argument("--store", help="also read the first store from this object-store URI (s3://..., "
                                        "gs://...)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "phantom"
        start = time.perf_counter()
        generate_phantom(root, n=args.images, size=SOURCE_SIZE, seed=0)
        print(f"phantom generation: {args.images} images of {SOURCE_SIZE} px in "
              f"{time.perf_counter() - start:.1f} s")
        table = load_source("nih", root)
        table.frame["split"] = "train"  # both paths read all images
        png_bytes = sum(Path(p).stat().st_size for p in table.frame["path"])
        loaders = {"reference": DataLoader(ReferenceDataset(table.frame["path"].tolist()),
                                           batch_size=args.batch,
                                           shuffle=True)}
        for size in args.store_size:
            store = Path(tmp) / f"store{size}"
            cpu = time.process_time()
            prepare_store(table, store, size=size, workers=1)
            store_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
            print(f"store {size} px: prepared at {args.images / (time.process_time() - cpu):.1f} img/s per "
                  f"core (one-off); disk per 100k images {store_bytes / args.images * 1e5 / 1e9:.1f} GB "
                  f"(the phantom PNGs: {png_bytes / args.images * 1e5 / 1e9:.1f} GB)")
            for margin in args.half_margins:
                transform = build_finetune_transform(IMG_SIZE, 0.08, MAGNITUDE, True, NIH_MEAN, NIH_STD)
                # the crop: reads the half copy at >= margin x the output
                transform.ops[0].half_margin = margin
                ds = StoreDataset(store, "train", transform)
                loaders[(size, margin)] = make_loader(ds, batch_size=args.batch, train=True)
        for loader in loaders.values():
            images_per_second(loader, 1)  # warm-up: page cache, imports
        runs: dict = {name: [] for name in loaders}
        for _ in range(args.repeats):
            for name, loader in loaders.items():
                runs[name].append(images_per_second(loader, args.epochs))
        remote = (remote_rates(Path(tmp) / f"store{args.store_size[0]}", args, Path(tmp)) if args.store
                  else None)
    rate = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    walls = {name: ", ".join(f"{r[1]:.1f}" for r in rs) for name, rs in runs.items()}
    print("images per CPU second (= per core), median of the runs; wall-clock rates of the runs in brackets")
    print(f"(a) reference  PNG {SOURCE_SIZE} px + timm RGB transform, RandAug m{MAGNITUDE}: "
          f"{rate['reference']:8.1f} img/s per core [{walls['reference']}]")
    for size in args.store_size:
        for margin in args.half_margins:
            key = (size, margin)
            print(f"(b) ours       store {size} px + gray transform, RandAug m{MAGNITUDE}, half copy at >= "
                  f"{margin:g}x: {rate[key]:8.1f} img/s per core [{walls[key]}]  ratio (b)/(a) "
                  f"{rate[key] / rate['reference']:.1f}x (target >= 10x)")
    if remote is not None:
        first, steady = remote
        local = statistics.median(r[1] for r in runs[(args.store_size[0], args.half_margins[0])])
        print(f"(c) object store {args.store} ({args.store_size[0]} px), wall-clock img/s: first epoch "
              f"(fetch included) {first:.1f}, steady state {steady:.1f}; local disk (b) {local:.1f}")


if __name__ == "__main__":
    main()
