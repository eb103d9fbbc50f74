"""Loader throughput: the reference input path vs the prepared store, side by side on the same images.

    .venv/bin/python benchmarks/loader.py [--images 64] [--epochs 3] [--batch 32]

(a) reference: decode a 1024x1024 PNG with PIL, convert to RGB, timm's training transform with RandAug
    (create_transform(224, is_training=True, auto_augment="rand-m6-mstd0.5-inc1", bicubic)) — what the
    paper's code does for every image of every epoch;
(b) ours: the same images prepared once into a 256 px store, read memory-mapped, our fine-tuning
    transform (RandomResizedCrop + flip + RandAug m6 on the gray image, 224 output).
Both run through a DataLoader (batch 32, no worker processes) in one process on one thread, so the
figures are images per second per core. The 1024 px phantom PNGs are generated in a temp dir first.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from thoraxmae.datasets.config import NIH_MEAN, NIH_STD
from thoraxmae.datasets.loader import StoreDataset, make_loader
from thoraxmae.datasets.phantom import generate_phantom
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.store import prepare_store
from thoraxmae.datasets.transforms import build_finetune_transform, randaug_config

IMG_SIZE, STORE_SIZE, SOURCE_SIZE, MAGNITUDE = 224, 256, 1024, 6


class ReferenceDataset(Dataset):
    """PNG files decoded on every access, timm's RGB training transform."""

    def __init__(self, paths: list[str]):
        from timm.data import create_transform

        self.paths = paths
        self.transform = create_transform(IMG_SIZE, is_training=True, auto_augment=randaug_config(MAGNITUDE),
                                          interpolation="bicubic", mean=(NIH_MEAN,) * 3, std=(NIH_STD,) * 3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))  # [3, 224, 224]


def images_per_second(loader: DataLoader, epochs: int) -> float:
    for _ in loader:  # warm-up epoch
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images = batch[0] if isinstance(batch, list | tuple) else batch
            assert images.shape[1:] == (3, IMG_SIZE, IMG_SIZE)
            n += len(images)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "phantom"
        start = time.perf_counter()
        generate_phantom(root, n=args.images, size=SOURCE_SIZE, seed=0)
        gen_s = time.perf_counter() - start
        table = load_source("nih", root)
        table.frame["split"] = "train"  # both paths read all images
        start = time.perf_counter()
        prepare_store(table, Path(tmp) / "store", size=STORE_SIZE, workers=1, progress=False)
        prep_s = time.perf_counter() - start
        reference = DataLoader(ReferenceDataset(table.frame["path"].tolist()), batch_size=args.batch, shuffle=True)
        ref = images_per_second(reference, args.epochs)
        ours_ds = StoreDataset(Path(tmp) / "store", "train",
                               build_finetune_transform(IMG_SIZE, 0.08, MAGNITUDE, True, NIH_MEAN, NIH_STD))
        ours = images_per_second(make_loader(ours_ds, batch_size=args.batch, train=True), args.epochs)
    print(f"phantom generation: {args.images} images of {SOURCE_SIZE} px in {gen_s:.1f} s "
          f"({args.images / gen_s:.1f} img/s)")
    print(f"store preparation (one-off): {args.images / prep_s:.1f} img/s per core ({SOURCE_SIZE} px PNG -> "
          f"{STORE_SIZE} px)")
    print(f"(a) reference  PNG {SOURCE_SIZE} px + timm RGB transform, RandAug m{MAGNITUDE}: {ref:8.1f} img/s per core")
    print(f"(b) ours       store {STORE_SIZE} px + gray transform, RandAug m{MAGNITUDE}:     {ours:8.1f} img/s per core")
    print(f"ratio (b)/(a): {ours / ref:.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main()
