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

Counting pixels ignores the resampling filter. The fine-detail section measures what the pixels show, on a
real radiograph (pydicom-data's RG1_UNCR.dcm, squared, resized to 1024 px, + noise sigma 3 gray levels):
the high-frequency energy of each crop relative to the reference's crop, the same box cut from the 1024 px
original and resized once (bicubic) to the output (datasets/fine_detail.py). Printed:
- per store size, the mean fine detail kept (and the 5th percentile) over drawn fine-tuning and
  pre-training crops, as the transforms read them (the half copy at >= HALF_COPY_MARGIN x the output),
  and the share read from the half copy; the same with the old margin 1.0 beside it;
- for the 768 px store, the fine detail crops keep when read from the half copy, by how many times the
  output's pixels the box holds across in the half copy (224 and 112 px outputs pooled): the table that
  sets HALF_COPY_MARGIN (the smallest margin where the half copy keeps >= 0.98).
"""
from __future__ import annotations

import argparse
import itertools
import random

import numpy as np

from thoraxmae.datasets.fine_detail import fine_detail_kept, resized_crop, scaled_box
from thoraxmae.datasets.resolution import PAPER_CROP_MINS, detail_kept, smallest_store
from thoraxmae.datasets.store_shards import levels
from thoraxmae.datasets.transforms import HALF_COPY_MARGIN, RandomResizedCrop, crop_scale

SCALES = (0.08, 0.2, 0.5, 1.0)
RATIO_BINS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.5)  # box side in the half copy / output side


def radiograph(source: int, noise: float = 3.0) -> np.ndarray:
    """uint8 [source, source]: a real PA chest radiograph (pydicom-data), squared, resized, + seeded noise."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    from thoraxmae.datasets.sources.dicom import read_dicom

    img = read_dicom(get_testdata_file("RG1_UNCR.dcm", download=False))
    h, w = img.shape
    s = min(h, w)
    square = Image.fromarray(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
    big = np.asarray(square.resize((source, source), Image.Resampling.BICUBIC), np.float64)
    return np.clip(big + np.random.default_rng(0).normal(0, noise, big.shape), 0, 255).astype(np.uint8)


def crop_fine_detail(original: np.ndarray, size: int, crop_min: float, output: int, draws: int,
                     margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over `draws` crops of a `size` px store of `original` read as the transforms read them with the half
    copy at `margin`: (fine detail kept [n], read from the half copy [n] bool, half-copy side / output
    [n])."""
    full, half = levels(original, size)
    random.seed(0)
    crop = RandomResizedCrop(output, crop_scale(crop_min))
    side = full.shape[0]
    kept, from_half, ratio = [], [], []
    for _ in range(draws):
        box = tuple(float(v) for v in crop.box(side, side))
        reference = resized_crop(original, scaled_box(box, original.shape[0] / side), output)
        r = (min(box[2] - box[0], box[3] - box[1]) * (half.shape[0] / side) / output if half is not None
             else 0.0)
        use_half = half is not None and r >= margin
        ours = (resized_crop(half, scaled_box(box, half.shape[0] / side), output) if use_half
                else resized_crop(full, box, output))
        kept.append(fine_detail_kept(ours, reference))
        from_half.append(use_half)
        ratio.append(r)
    return np.array(kept), np.array(from_half), np.array(ratio)


def print_fine_detail(sizes: list[int], source: int, output: int, draws: int) -> None:
    original = radiograph(source)
    print(f"\nFine detail kept (high-frequency energy vs the reference crop), {draws} drawn crops of a real "
          f"radiograph ({source} px, noise sigma 3): mean (5th percentile) / share read from the half copy, "
          f"half copy at >= {HALF_COPY_MARGIN:g}x the output [old margin 1.0]")
    print(f"{'store px':>8} | " + " | ".join(f"{p + ' ' + str(crop_scale(m)):^44}"
                                             for p, m in PAPER_CROP_MINS.items()))
    for size in sizes:
        cells = []
        for m in PAPER_CROP_MINS.values():
            now, half_now, _ = crop_fine_detail(original, size, m, output, draws, HALF_COPY_MARGIN)
            old, half_old, _ = crop_fine_detail(original, size, m, output, draws, 1.0)
            cells.append(f"{now.mean():.3f} ({np.percentile(now, 5):.3f}) {half_now.mean():4.0%} "
                         f"[{old.mean():.3f} ({np.percentile(old, 5):.3f}) {half_old.mean():4.0%}]")
        print(f"{size:>8} | " + " | ".join(cells))
    kept, ratio = [], []
    for out in (output, output // 2):
        # all from half
        k, _, r = crop_fine_detail(original, 768, PAPER_CROP_MINS["fine-tuning"], out, draws, 0.0)
        kept.append(k)
        ratio.append(r)
    k, r = np.concatenate(kept), np.concatenate(ratio)
    print(f"768 px store, crops read from the half copy, by box side in it / output ({output} and "
          f"{output // 2} px):")
    for lo, hi in itertools.pairwise(RATIO_BINS):
        sel = (r >= lo) & (r < hi)
        if sel.any():
            print(f"  {lo:4.2f}-{hi:4.2f}x: fine detail kept {k[sel].mean():.3f} (5th percentile "
                  f"{np.percentile(k[sel], 5):.3f}, n={int(sel.sum())})")


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
    parser.add_argument("--fine-draws", type=int, default=300, help="crops per cell of the fine-detail "
                                                                    "section")
    args = parser.parse_args()
    crops = {phase: drawn_crops(m, args.draws) for phase, m in PAPER_CROP_MINS.items()}
    print(f"Detail kept vs the reference (crops of the {args.source} px original, resized to {args.output} "
          "px)")
    print(f"{'store px':>8} | " + " | ".join(f"s={s:<4}" for s in SCALES) + " | s=0.08 3:4 | GB per 100k "
                                                                            "1024 px images")
    for size in args.sizes:
        cells = [f"{detail_kept(s, size, args.source, args.output):6.3f}" for s in SCALES]
        narrow = detail_kept(0.08, size, args.source, args.output, aspect=3 / 4)
        pixels = size * size + ((size // 2) ** 2 if size < args.source else 0)  # + the half copy
        print(f"{size:>8} | " + " | ".join(cells) + f" | {narrow:10.3f} | {pixels * 1e5 / 1e9:6.1f}")
    print(f"\nOver {args.draws} drawn crops: mean detail kept, share keeping < 0.9, share upsampled, "
          "share read from the half copy")
    print(f"{'store px':>8} | " + " | ".join(f"{p + ' ' + str(crop_scale(m)):^36}"
                                             for p, m in PAPER_CROP_MINS.items()))
    for size in args.sizes:
        cells = []
        for phase in PAPER_CROP_MINS:
            kept = drawn_detail(crops[phase], size, args.source, args.output)
            upsampled = (crops[phase] * min(size, args.source) < args.output).any(axis=1)
            half = (crops[phase] * (size // 2) >= HALF_COPY_MARGIN * args.output).all(axis=1) \
                if size < args.source else upsampled & False
            cells.append(f"{kept.mean():7.3f} {np.mean(kept < 0.9):8.1%} {upsampled.mean():9.1%} "
                         f"{half.mean():8.1%}")
        print(f"{size:>8} | " + " | ".join(cells))
    print()
    for phase, m in PAPER_CROP_MINS.items():
        print(f"smallest store keeping >= 0.9 at the paper's {phase} crop scale {m}: "
              f"{smallest_store(m, 0.9, args.source, args.output)} px")
    print_fine_detail([s for s in args.sizes if s < args.source], args.source, args.output, args.fine_draws)


if __name__ == "__main__":
    main()
