"""A fine-tuned checkpoint evaluated on one split of a store, outside Ray (CPU, or one GPU), in batches.

    ev = evaluate_checkpoint("best_model.pt", "/data/stores/nih256", "test")
    ev.mauc, ev.ci.mauc, ev.per_class_auc, ev.metrics("test/")

The classifier is rebuilt from the file (format recognised from the content): our files carry their
model config and normalisation; the paper's released files their `args` (model name, input size, pooling);
a plain timm state dict is matched to a ViT preset by its shapes. Inputs are normalised with the statistics
the file declares (`normalization_of`): ours, or a released file's `args.norm_stats` ("imagenet": ImageNet's
per-channel mean/std on the gray image copied to RGB; "chestx-ray": the NIH ones); a file that declares
none gets the NIH statistics the paper fine-tunes with (docs/paper.md), and `norm_stats=` overrides it.
A declaration this code cannot honour (an unknown name, ImageNet statistics for a one-channel model,
a non-positive std) is refused in one CheckpointError line, as are weights that hold NaN or infinity.
The head must come from the file, in the store's class order (reordered by name when the file states
another order). Intervals are the patient-level bootstrap of trainers.metrics.
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thoraxmae.datasets.config import IMAGENET_MEAN, IMAGENET_STD, NIH_MEAN, NIH_STD
from thoraxmae.datasets.loader import StoreDataset, make_loader
from thoraxmae.datasets.storage import shown
from thoraxmae.datasets.store_read import open_store
from thoraxmae.datasets.transforms import build_eval_transform
from thoraxmae.trainers.checkpoint_files import CheckpointFile, open_checkpoint
from thoraxmae.trainers.checkpoints import LoadReport, load_encoder
from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.metrics import (
    BootstrapCI,
    accuracy,
    auc_metrics,
    bootstrap_ci,
    mean_auc,
    per_class_auc,
)
from thoraxmae.trainers.models import PRESETS, build_classifier, resolve_model

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (images done, images in the split)
Stat = float | tuple[float, ...]  # one value for the gray channel, or one per channel
# The statistics a file may declare by name (a released file's `args.norm_stats`; docs/paper.md).
NORM_STATS: dict[str, tuple[Stat, Stat]] = {"chestx-ray": (NIH_MEAN, NIH_STD), "nih": (NIH_MEAN, NIH_STD),
                                            "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
NORM_CHOICES = ("auto", *NORM_STATS)  # auto: what the checkpoint declares


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_checkpoint` measured. logits/labels/mask: [n, K] in the split's row order."""

    checkpoint: Path | str  # a local file, or the object-store URI it was fetched from
    format: str
    store: Path | str  # likewise
    split: str
    model: ModelConfig
    label_names: tuple[str, ...]
    multiclass: bool
    logits: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    per_class_auc: np.ndarray
    mauc: float
    accuracy: float | None
    ci: BootstrapCI
    load: LoadReport
    normalization: tuple[Stat, Stat] = (NIH_MEAN, NIH_STD)  # (mean, std) the inputs were normalised with

    def metrics(self, prefix: str) -> dict[str, float]:
        """{prefix}mauc, {prefix}auc/<label>, {prefix}acc and the intervals (numbers only)."""
        out: dict[str, Any] = {f"{prefix}mauc": self.mauc, **auc_metrics(f"{prefix}auc/", self.label_names,
                                                                         self.per_class_auc)}
        if self.accuracy is not None:
            out[f"{prefix}acc"] = self.accuracy
        out.update(self.ci.metrics(prefix, self.label_names))
        return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and math.isfinite(v)}


def evaluate_checkpoint(checkpoint: str | os.PathLike, store: str | os.PathLike, split: str = "test", *,
                        batch_size: int = 64, bootstrap: int = 1000, seed: int = 0, device: str = "cpu",
                        num_workers: int = 0, norm_stats: str = "auto",
                        progress: Progress | None = None) -> Evaluation:
    """Evaluate `checkpoint` on `split` of `store` (a folder or an object-store URI); see the module
    docstring. ValueError for a bad argument (check_options); CheckpointError when the file is not a
    finite classifier for the store's classes or declares statistics it cannot be normalised with;
    DataError for a bad store or split."""
    torch_device = check_options(batch_size, bootstrap, num_workers, device, norm_stats)
    ck = open_checkpoint(checkpoint)
    model_cfg = model_config_of(ck)
    mean, std = normalization_of(ck, model_cfg.in_chans, norm_stats)
    check_finite(ck)
    st = open_store(store)
    names, multiclass = st.label_names, st.task == "multiclass"
    model = build_classifier(model_cfg, len(names), drop_path=0.0)
    report = load_encoder(model, ck.path, ck.format, label_names=names, require_head=True)
    transform = build_eval_transform(resolve_model(model_cfg).img_size, mean, std, model_cfg.in_chans)
    ds = StoreDataset(st, split, transform)
    logits = predict_logits(model.to(torch_device).eval(), ds, batch_size, str(torch_device), num_workers,
                            progress)
    if not np.isfinite(logits).all():
        raise CheckpointError(f"{ck.path}: the model gives non-finite outputs on "
                              f"{int((~np.isfinite(logits)).any(1).sum())} of {len(logits)} {split} images; "
                              "its weights are unusable for evaluation")
    labels, mask = ds.labels.numpy(), ds.mask.numpy()
    scores = _probabilities(logits, multiclass)
    aucs = per_class_auc(labels, scores, mask)
    ci = bootstrap_ci(labels, scores, mask, bootstrap, seed=seed, multiclass=multiclass,
                      patient_ids=st.patient_ids[ds.indices])
    shown_ck = shown(str(checkpoint), ck.path)
    return Evaluation(shown_ck, ck.format, st.source or st.path, split, model_cfg, names, multiclass, logits,
                      labels,
                      mask, aucs, mean_auc(aucs), accuracy(labels, scores) if multiclass else None, ci,
                      report,
                      (mean, std))


def check_options(batch_size: int, bootstrap: int, num_workers: int, device: str,
                  norm_stats: str = "auto") -> torch.device:
    """The torch device, after range checks of the other options; ValueError names the option and what
    is expected (before a file is read). A CUDA device must be present, not only named."""
    for name, value, low in (("batch_size", batch_size, 1), ("bootstrap", bootstrap, 0),
                             ("workers", num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
    if norm_stats not in NORM_CHOICES:
        raise ValueError(f"norm_stats={norm_stats!r}: expected one of {list(NORM_CHOICES)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device={device!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r}: CUDA is not available on this machine (no GPU, or no "
                             "driver); use cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device={device!r}: this machine has {count} CUDA device(s), "
                             f"cuda:0..cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available on this machine; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r}: evaluate runs on cpu, cuda or mps")
    return dev


def check_finite(ck: CheckpointFile) -> None:
    """CheckpointError naming the first tensors that hold NaN or infinity (a diverged or damaged file)."""
    bad = [k for k, v in ck.state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{ck.path}: {len(bad)} of {len(ck.state)} weight tensors hold NaN or infinite "
                              f"values (e.g. {', '.join(bad[:3])}); the weights are damaged or the run "
                              "diverged")


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, ds: StoreDataset, batch_size: int, device: str, num_workers: int,
                   progress: Progress | None = None) -> np.ndarray:
    """[n, K] float32 logits of the whole split, in its row order."""
    loader = make_loader(ds, batch_size=batch_size, train=False, num_workers=num_workers)
    out, done = [], 0
    for images, _, _ in loader:
        out.append(model(images.to(device)).float().cpu().numpy())  # [B, K]
        done += len(images)
        if progress is not None:
            progress(done, len(ds))
    return np.concatenate(out)


def _probabilities(logits: np.ndarray, multiclass: bool) -> np.ndarray:
    t = torch.from_numpy(logits)
    return (t.softmax(-1) if multiclass else t.sigmoid()).numpy()


def normalization_of(ck: CheckpointFile, in_chans: int = 3, norm_stats: str = "auto") -> tuple[Stat, Stat]:
    """(mean, std) to normalise inputs with: `norm_stats` when named, else what the checkpoint declares
    (ours: `normalization`; a released file: `args.norm_stats`), else the NIH statistics the paper
    fine-tunes with (docs/paper.md). CheckpointError, in one line saying why, for a declaration that
    cannot be honoured."""
    if norm_stats != "auto":
        mean, std = NORM_STATS[norm_stats]
        where = f"--norm-stats {norm_stats}"
    else:
        mean, std, where = _declared(ck)
    mean, std = (v[0] if isinstance(v, tuple) and len(v) == 1 else v for v in (mean, std))
    for name, value in (("mean", mean), ("std", std)):
        values = value if isinstance(value, tuple) else (value,)
        if len(values) not in (1, in_chans):
            raise CheckpointError(f"{ck.path}: {where} gives {len(values)} {name} values for a model that "
                                  f"reads {in_chans} channel(s); per-channel statistics need one value per "
                                  "channel")
        if not all(math.isfinite(v) for v in values) or (name == "std" and min(values) <= 0):
            raise CheckpointError(f"{ck.path}: {where} gives {name}={value!r}; expected finite values"
                                  + (" and a std > 0" if name == "std" else ""))
    return mean, std


def _declared(ck: CheckpointFile) -> tuple[Stat, Stat, str]:
    """(mean, std, where it comes from) as the file declares them."""
    norm = ck.content.get("normalization")
    if norm is not None:
        if not (isinstance(norm, dict) and {"mean", "std"} <= set(norm)):
            raise CheckpointError(f"{ck.path}: its `normalization` entry is {type(norm).__name__} "
                                  f"{norm!r:.80}; "
                                  "expected {'mean': ..., 'std': ...}")
        try:
            return _stat(norm["mean"]), _stat(norm["std"]), "its `normalization`"
        except (TypeError, ValueError):
            raise CheckpointError(f"{ck.path}: its `normalization` {norm!r:.80} is not numbers") from None
    name = getattr(ck.args, "norm_stats", None) if ck.args is not None else None
    if name is None:
        return NIH_MEAN, NIH_STD, "the paper's NIH statistics"
    if name not in NORM_STATS:
        raise CheckpointError(f"{ck.path}: its args.norm_stats={name!r} names statistics this evaluation "
                              f"does not know ({', '.join(NORM_STATS)}); pass --norm-stats to choose them")
    mean, std = NORM_STATS[name]
    return mean, std, f"its args.norm_stats={name!r}"


def _stat(value: object) -> Stat:
    if isinstance(value, list | tuple):
        return tuple(float(v) for v in value)
    if isinstance(value, bool):
        raise TypeError("a bool is not a statistic")
    return float(value)  # type: ignore[arg-type]


def model_config_of(ck: CheckpointFile) -> ModelConfig:
    """The ModelConfig a checkpoint's weights belong to (see the module docstring)."""
    stored = ck.content.get("model_config")
    if isinstance(stored, dict):
        return ModelConfig.model_validate(stored)
    state = ck.state
    name = str(getattr(ck.args, "model", "")) if ck.args is not None else ""
    if "patch_embed.proj.weight" not in state:
        if PRESETS.get(name, {}).get("kind") == "cnn":
            return ModelConfig(name=name, in_chans=_cnn_in_chans(state))
        raise CheckpointError(f"{ck.path}: cannot tell which model its weights belong to (no ViT patch_embed "
                              "and no CNN named in its args); a file saved by thoraxmae fine-tuning carries "
                              "its model config")
    w = state["patch_embed.proj.weight"]  # [D, C, p, p]
    embed_dim, in_chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    if PRESETS.get(name, {}).get("embed_dim") != embed_dim:
        name = _vit_preset_for(ck.path, embed_dim, depth)
    return ModelConfig(name=name, img_size=grid * patch, patch_size=patch, in_chans=in_chans,
                       embed_dim=embed_dim,
                       depth=depth, global_pool="avg" if "fc_norm.weight" in state else "token")


def _vit_preset_for(path: Path, embed_dim: int, depth: int) -> str:
    """The ViT preset with this width (its head count is the one size a state dict does not show)."""
    for name, preset in PRESETS.items():
        if preset["kind"] == "vit" and preset["embed_dim"] == embed_dim:
            return name
    widths = sorted({p["embed_dim"] for p in PRESETS.values() if p["kind"] == "vit"})
    raise CheckpointError(f"{path}: a ViT of width {embed_dim} (depth {depth}) matches no preset; "
                          f"preset widths: {widths}")


def _cnn_in_chans(state: dict[str, torch.Tensor]) -> int:
    first = next((v for k, v in state.items() if k.endswith("weight") and v.ndim == 4), None)
    return int(first.shape[1]) if first is not None else 3
