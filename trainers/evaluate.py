"""A fine-tuned checkpoint evaluated on one split of a store, outside Ray (CPU, or one GPU), in batches.

    ev = evaluate_checkpoint("best_model.pt", "/data/stores/nih256", "test")
    ev.mauc, ev.ci.mauc, ev.per_class_auc, ev.metrics("test/")

The classifier is rebuilt from the file (format recognised from the content): our files carry their
model config and normalisation; the paper's released files their `args` (model name, input size, pooling)
and otherwise the NIH statistics (docs/paper.md); a plain timm state dict is matched to a ViT preset by its
shapes. The head must come from the file, in the store's class order (reordered by name when the file
states another order). Intervals are the patient-level bootstrap of trainers.metrics.
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

from thoraxmae.datasets.config import NIH_MEAN, NIH_STD
from thoraxmae.datasets.loader import StoreDataset, make_loader
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


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_checkpoint` measured. logits/labels/mask: [n, K] in the split's row order."""

    checkpoint: Path
    format: str
    store: Path
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
                        num_workers: int = 0, progress: Progress | None = None) -> Evaluation:
    """Evaluate `checkpoint` on `split` of `store`; see the module docstring. CheckpointError when the
    file is not a classifier for the store's classes; DataError for a bad store or split."""
    ck = open_checkpoint(checkpoint)
    model_cfg = model_config_of(ck)
    st = open_store(store)
    names, multiclass = st.label_names, st.task == "multiclass"
    model = build_classifier(model_cfg, len(names), drop_path=0.0)
    report = load_encoder(model, ck.path, ck.format, label_names=names, require_head=True)
    mean, std = normalization_of(ck)
    transform = build_eval_transform(resolve_model(model_cfg).img_size, mean, std, model_cfg.in_chans)
    ds = StoreDataset(st, split, transform)
    logits = predict_logits(model.to(device).eval(), ds, batch_size, device, num_workers, progress)
    labels, mask = ds.labels.numpy(), ds.mask.numpy()
    scores = _probabilities(logits, multiclass)
    aucs = per_class_auc(labels, scores, mask)
    ci = bootstrap_ci(labels, scores, mask, bootstrap, seed=seed, multiclass=multiclass,
                      patient_ids=st.patient_ids[ds.indices])
    return Evaluation(ck.path, ck.format, st.path, split, model_cfg, names, multiclass, logits, labels, mask, aucs,
                      mean_auc(aucs), accuracy(labels, scores) if multiclass else None, ci, report)


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


def normalization_of(ck: CheckpointFile) -> tuple[float, float]:
    """(mean, std) the checkpoint was trained with: ours store it; otherwise the NIH statistics the paper
    normalises with (docs/paper.md)."""
    norm = ck.content.get("normalization")
    if isinstance(norm, dict) and {"mean", "std"} <= set(norm):
        return float(norm["mean"]), float(norm["std"])
    if ck.args is not None and getattr(ck.args, "norm_stats", None) == "imagenet":
        log.warning("%s was trained with ImageNet statistics; evaluating with the NIH ones", ck.path)
    return NIH_MEAN, NIH_STD


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
        raise CheckpointError(f"{ck.path}: cannot tell which model its weights belong to (no ViT patch_embed and no "
                              f"CNN named in its args); a file saved by thoraxmae fine-tuning carries its model config")
    w = state["patch_embed.proj.weight"]  # [D, C, p, p]
    embed_dim, in_chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    if PRESETS.get(name, {}).get("embed_dim") != embed_dim:
        name = _vit_preset_for(ck.path, embed_dim, depth)
    return ModelConfig(name=name, img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim,
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
