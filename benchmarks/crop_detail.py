"""Detail a training crop keeps, per store size, relative to the reference (which crops the 1024 px original).

    .venv/bin/python benchmarks/crop_detail.py [--sizes 256 512 720 768 1024] [--source 1024] [--output 224]

A crop of area fraction s from a store of side S holds s**0.5 * S source pixels per side; resized to
`output` px it keeps min(s**0.5 * S, output) / min(s**0.5 * source, output) of the reference's detail
(datasets/resolution.py, docs/paper.md "Crops and stored resolution"). Printed per store size:
- the detail kept by a square crop at scales 0.08, 0.2, 0.5, 1.0, and along the narrow axis of the most
  stretched crop (aspect 3:4) at 0.08;
- over the crops the training transforms really draw (20,000 boxes of RandomResizedCrop, fine-tuning
  scale (0.08, 1), pre-training (0.5, 1)): the mean detail kept, the share of crops keeping < 0.9, the
  share of crops upsampled (fewer than `output` source pixels across), and the share read from the
  store's half-resolution copy (which an image smaller than the original keeps; those crops have
  >= `output` pixels across there, so they keep detail 1.0 too, at a quarter of the resampling);
- the disk a store of square images takes per 100,000 images (uint8, uncompressed, with the half copy
  an image keeps when it is smaller than the original).
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from thoraxmae.datasets.resolution import PAPER_CROP_MINS, detail_kept, smallest_store
from thoraxmae.datasets.transforms import RandomResizedCrop, crop_scale

SCALES = (0.08, 0.2, 0.5, 1.0)


def drawn_crops(crop_min: float, n: int, side: int = 4096) -> np.ndarray:
    """[n, 2] (width, height) of crops as fractions of the image side, drawn by our (= timm's) sampler."""
    random.seed(0)
    crop = RandomResizedCrop(224, crop_scale(crop_min))
    boxes = np.array([crop.box(side, side) for _ in range(n)], float)
    return np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1) / side


def drawn_detail(fractions: np.ndarray, store: int, source: int, output: int) -> np.ndarray:
    """Per crop, the geometric mean over its two axes of the detail kept."""
    ours = np.minimum(fractions * min(store, source), output)
    ref = np.minimum(fractions * source, output)
    return np.sqrt((ours / ref).prod(axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 720, 768, 1024])
    parser.add_argument("--source", type=int, default=1024, help="the original's side (NIH: 1024)")
    parser.add_argument("--output", type=int, default=224, help="the model's input side")
    parser.add_argument("--draws", type=int, default=20000)
    args = parser.parse_args()
    crops = {phase: drawn_crops(m, args.draws) for phase, m in PAPER_CROP_MINS.items()}
    print(f"Detail kept vs the reference (crops of the {args.source} px original, resized to {args.output} px)")
    print(f"{'store px':>8} | " + " | ".join(f"s={s:<4}" for s in SCALES) + " | s=0.08 3:4 | GB per 100k 1024 px images")
    for size in args.sizes:
        cells = [f"{detail_kept(s, size, args.source, args.output):6.3f}" for s in SCALES]
        narrow = detail_kept(0.08, size, args.source, args.output, aspect=3 / 4)
        pixels = size * size + ((size // 2) ** 2 if size < args.source else 0)  # + the half copy
        print(f"{size:>8} | " + " | ".join(cells) + f" | {narrow:10.3f} | {pixels * 1e5 / 1e9:6.1f}")
    print(f"\nOver {args.draws} drawn crops: mean detail kept, share keeping < 0.9, share upsampled, "
          "share read from the half copy")
    print(f"{'store px':>8} | " + " | ".join(f"{p + ' ' + str(crop_scale(m)):^36}" for p, m in PAPER_CROP_MINS.items()))
    for size in args.sizes:
        cells = []
        for phase in PAPER_CROP_MINS:
            kept = drawn_detail(crops[phase], size, args.source, args.output)
            upsampled = (crops[phase] * min(size, args.source) < args.output).any(axis=1)
            half = (crops[phase] * (size // 2) >= args.output).all(axis=1) if size < args.source else upsampled & False
            cells.append(f"{kept.mean():7.3f} {np.mean(kept < 0.9):8.1%} {upsampled.mean():9.1%} {half.mean():8.1%}")
        print(f"{size:>8} | " + " | ".join(cells))
    print()
    for phase, m in PAPER_CROP_MINS.items():
        print(f"smallest store keeping >= 0.9 at the paper's {phase} crop scale {m}: "
              f"{smallest_store(m, 0.9, args.source, args.output)} px")


if __name__ == "__main__":
    main()
