"""Synthetic ChestX-ray14: phantom radiographs with label-dependent findings, written in the real NIH layout.

    generate_phantom(Path("phantom"), n=2000, size=256, seed=0)

writes `images/<patient:08d>_<follow-up:03d>.png` (8-bit gray), `Data_Entry_2017_v2020.csv` with the real
11-column header, and the official-style `train_val_list.txt` / `test_list.txt` (patient-disjoint,
~77/23), so `load_source("nih", out)` reads it like the real dataset (docs/data-formats.md "ChestX-ray14").

Labels follow NIH's per-image frequencies (NIH_COUNTS: ~54% No Finding, Infiltration ~18%, Hernia
0.2%) with clinical co-occurrence (CO_OCCURRENCE), chronic findings persisting over a patient's
follow-ups, and a floor so small sets still have positives of every label in both parts of the split.
The anatomy and the findings are drawn by datasets.phantom_anatomy / datasets.phantom_findings.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.phantom_anatomy import jitter, sample_anatomy
from thoraxmae.datasets.phantom_findings import render
from thoraxmae.datasets.sources.nih import NIH_LABELS, NO_FINDING

log = logging.getLogger(__name__)

# Images per label in the 112,120 NIH images (Data_Entry_2017); 60,361 are "No Finding".
NIH_TOTAL, NIH_HEALTHY = 112_120, 60_361
NIH_COUNTS = {"Atelectasis": 11559, "Cardiomegaly": 2776, "Effusion": 13317, "Infiltration": 19894,
              "Mass": 5782,
              "Nodule": 6331, "Pneumonia": 1431, "Pneumothorax": 5302, "Consolidation": 4667, "Edema": 2303,
              "Emphysema": 2516, "Fibrosis": 1686, "Pleural_Thickening": 3385, "Hernia": 227}
# (label, given): the label's probability is multiplied by the factor when `given` is positive.
CO_OCCURRENCE = {("Effusion", "Cardiomegaly"): 2.5, ("Edema", "Cardiomegaly"): 3.0,
                 ("Effusion", "Edema"): 2.0,
                 ("Atelectasis", "Effusion"): 2.0, ("Infiltration", "Pneumonia"): 2.0,
                 ("Consolidation", "Pneumonia"): 2.5, ("Mass", "Nodule"): 1.5, ("Infiltration", "Edema"): 1.5}
# Drawn in this order, so each `given` of CO_OCCURRENCE is drawn before the labels it raises.
DRAW_ORDER = ("Cardiomegaly", "Pneumonia", "Nodule", "Edema", "Effusion", "Atelectasis", "Infiltration",
              "Consolidation", "Mass", "Pneumothorax", "Emphysema", "Fibrosis", "Pleural_Thickening",
              "Hernia")
CHRONIC = ("Cardiomegaly", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")  # persist over follow-ups
CHRONIC_KEEP = 0.8
TEST_FRACTION = 0.23  # official NIH split: 25,596 of 112,120 images are test
FLOOR_POSITIVES = 10  # each label's prevalence is at least min(FLOOR_PREVALENCE, 10 / n)
FLOOR_PREVALENCE = 0.05
CSV_NAME = "Data_Entry_2017_v2020.csv"
CSV_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
MIN_IMAGES = 10


def label_probabilities(n: int) -> np.ndarray:
    """P(label | diseased image) [K], NIH's prevalence with the small-set floor applied."""
    floor = min(FLOOR_PREVALENCE, FLOOR_POSITIVES / n)
    prevalence = np.array([max(NIH_COUNTS[k] / NIH_TOTAL, floor) for k in NIH_LABELS])
    return np.minimum(prevalence / (1 - NIH_HEALTHY / NIH_TOTAL), 0.95)


def draw_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Multi-hot labels [n, K] float32, independent per image, with co-occurrence.

    Co-occurrence reweights who gets a label without changing how many do, and a diseased image that
    drew nothing gets one label (chosen by prevalence), so the prevalences stay as in label_probabilities.
    """
    q = label_probabilities(n)
    scale = 1.0  # shrink q so the forced labels of "empty" diseased images restore it
    for _ in range(5):
        scale = 1.0 - float(np.prod(1.0 - scale * q)) / q.sum()
    diseased = rng.random(n) >= NIH_HEALTHY / NIH_TOTAL
    u = rng.random((n, len(NIH_LABELS)))
    col = {k: j for j, k in enumerate(NIH_LABELS)}
    labels = np.zeros((n, len(NIH_LABELS)), np.float32)
    for k in DRAW_ORDER:
        p = np.full(n, scale * q[col[k]])
        for (label, given), factor in CO_OCCURRENCE.items():
            if label == k:
                p = np.where(labels[:, col[given]] > 0, p * factor, p)
        if diseased.any():
            p = np.minimum(p * (scale * q[col[k]] / p[diseased].mean()), 0.95)
        labels[:, col[k]] = (u[:, col[k]] < p) & diseased
    empty = np.flatnonzero(diseased & (labels.sum(1) == 0))
    labels[empty, rng.choice(len(q), size=len(empty), p=q / q.sum())] = 1.0
    return labels


def draw_patients(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(patient id [n] int, follow-up number [n] int): 1-8 images per patient, most have few."""
    counts: list[int] = []
    while sum(counts) < n:
        counts.append(int(min(rng.geometric(0.4), 8)))
    counts[-1] -= sum(counts) - n
    patient = np.repeat(np.arange(1, len(counts) + 1), counts)
    follow_up = np.concatenate([np.arange(c) for c in counts])
    return patient, follow_up


def persist_chronic(labels: np.ndarray, follow_up: np.ndarray, rng: np.random.Generator) -> None:
    """Chronic labels of a follow-up repeat the previous image's (probability CHRONIC_KEEP), in place."""
    cols = [NIH_LABELS.index(k) for k in CHRONIC]
    keep = rng.random((len(labels), len(cols))) < CHRONIC_KEEP
    for i in np.flatnonzero(follow_up > 0):  # keep or redraw: the prevalence stays as drawn
        labels[i, cols] = np.where(keep[i], labels[i - 1, cols], labels[i, cols])


def split_patients(patient: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per image: True for the test part. Whole patients, ~TEST_FRACTION of the images."""
    ids, counts = np.unique(patient, return_counts=True)
    order = rng.permutation(len(ids))
    taken = np.cumsum(counts[order]) <= round(TEST_FRACTION * len(patient))
    taken[0] = True  # never an empty test part
    taken[-1] = False  # never an empty train_val part
    return np.isin(patient, ids[order][taken])


def top_up(labels: np.ndarray, test: np.ndarray, rng: np.random.Generator) -> None:
    """Every label gets a few positives in both parts of the split (in place)."""
    for part in (test, ~test):
        rows = np.flatnonzero(part)
        need = max(1, min(5, len(rows) // 20))
        for j in range(labels.shape[1]):
            short = need - int(labels[rows, j].sum())
            if short > 0:
                free = rows[labels[rows, j] == 0]
                labels[rng.choice(free, size=short, replace=False), j] = 1.0


def finding_text(row: np.ndarray) -> str:
    names = [k for k, v in zip(NIH_LABELS, row, strict=True) if v > 0]
    return "|".join(names) if names else NO_FINDING


def generate_phantom(out: Path, n: int, size: int = 256, seed: int = 0, *,
                     progress: Callable[[int], None] | None = None) -> Path:
    """Write `n` phantom radiographs of `size` px in the NIH layout under `out`; returns `out`.

    Deterministic in `seed`. `progress(k)` is called after every image with k = 1.
    """
    out = Path(out)
    if n < MIN_IMAGES:
        raise DataError(f"generate_phantom: n={n} is too small; need at least {MIN_IMAGES} images for "
                        "train, val and test patients")
    if size < 16:
        raise DataError(f"generate_phantom: size={size} is too small; need at least 16 px")
    rng = np.random.default_rng(seed)
    patient, follow_up = draw_patients(n, rng)
    labels = draw_labels(n, rng)
    persist_chronic(labels, follow_up, rng)
    test = split_patients(patient, rng)
    top_up(labels, test, rng)
    names = [f"{p:08d}_{f:03d}.png" for p, f in zip(patient, follow_up, strict=True)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    anatomy = None
    for i, name in enumerate(names):
        image_rng = np.random.default_rng((seed, i))
        if follow_up[i] == 0:
            anatomy = sample_anatomy(np.random.default_rng((seed, int(patient[i]), 1 << 20)))
        positive = [k for k, v in zip(NIH_LABELS, labels[i], strict=True) if v > 0]
        pixels = render(jitter(anatomy, image_rng), positive, size, image_rng)
        Image.fromarray(pixels, mode="L").save(out / "images" / name, compress_level=1)
        if progress is not None:
            progress(1)
    _write_csv(out / CSV_NAME, names, labels, patient, follow_up, rng)
    (out / "train_val_list.txt").write_text("".join(f"{m}\n" for m, t in zip(names, test, strict=True)
                                                    if not t))
    (out / "test_list.txt").write_text("".join(f"{m}\n" for m, t in zip(names, test, strict=True) if t))
    log.info("phantom: %d images of %d px, %d patients, %d test images -> "
             "%s", n, size, len(set(patient.tolist())),
             int(test.sum()), out)
    return out


def _write_csv(path: Path, names: list[str], labels: np.ndarray, patient: np.ndarray, follow_up: np.ndarray,
               rng: np.random.Generator) -> None:
    """Data_Entry_2017_v2020.csv with plausible metadata (age, sex, view, original size, spacing)."""
    n_patients = int(patient.max())
    age = rng.integers(18, 86, size=n_patients + 1)
    sex = np.where(rng.random(n_patients + 1) < 0.56, "M", "F")
    view = np.where(rng.random(len(names)) < 0.6, "PA", "AP")
    width, height = rng.integers(2000, 3056, size=len(names)), rng.integers(2000, 3056, size=len(names))
    spacing = rng.choice([0.139, 0.143, 0.168], size=len(names))
    lines = [CSV_HEADER]
    for i, name in enumerate(names):
        p = int(patient[i])
        lines.append(f"{name},{finding_text(labels[i])},{int(follow_up[i])},{p},"
                     f"{int(age[p]) + int(follow_up[i]) // 3},"
                     f"{sex[p]},{view[i]},{int(width[i])},{int(height[i])},{spacing[i]:.3f},{spacing[i]:.3f}")
    path.write_text("\n".join(lines) + "\n")
