"""Saving weights and loading them into a model, always with `torch.load(weights_only=True)`.

The file's format ("auto" recognises it from the content; trainers/checkpoint_files.py) is read, then
`load_encoder` puts its weights into a classifier (or an MAE): it drops what only pre-training uses,
resizes pos_embed to the model's patch grid, puts a head's classes in the caller's order (the order is
stored in our files and implied by a released file's `args.dataset`), checks the exact sets of missing
and left-out keys, and returns a LoadReport (loaded / missing / dropped keys, pos_embed resize, head).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from thoraxmae.datasets.storage import shown
from thoraxmae.trainers.checkpoint_files import (
    FORMATS,
    CheckpointFile,
    check_checkpoint,
    open_checkpoint,
    read_checkpoint,
)
from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.models.unwrap import unwrap
from thoraxmae.trainers.pos_embed import interpolate_pos_embed

__all__ = ["FORMATS", "LoadReport", "check_checkpoint", "load_encoder", "read_checkpoint", "save_model"]

logger = logging.getLogger(__name__)

PRETRAIN_ONLY = ("decoder_", "mask_token")  # key prefixes an MAE has and a classifier never loads
HeadState = Literal["loaded", "reordered", "unchecked", "dropped", "absent", "none"]


@dataclass(frozen=True)
class LoadReport:
    """What load_encoder did. loaded: file keys put into the model; missing: model keys the file did not
    provide (only the classifier head and fc_norm may be); dropped: file keys left out on purpose (MAE
    decoder and mask_token, the final `norm` when the model pools into fc_norm, a head of other classes).
    head: "loaded" (same classes, same order), "reordered" (the file's order `file_classes` put into the
    model's), "unchecked" (the file does not say its classes), "dropped", "absent" (none in the file) or
    "none" (the model has none, e.g. an MAE)."""

    path: Path
    format: str
    loaded: frozenset[str]
    missing: frozenset[str]
    dropped: frozenset[str]
    pos_embed_grid: tuple[tuple[int, int], tuple[int, int]] | None = None  # (from, to) when resized
    head: HeadState = "none"
    file_classes: tuple[str, ...] | None = None

    @property
    def resized_pos_embed(self) -> bool:
        return self.pos_embed_grid is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: what a run stores beside its metrics (the study logs it as an artifact)."""
        grid = self.pos_embed_grid
        return {"path": str(self.path), "format": self.format, "loaded": sorted(self.loaded),
                "missing": sorted(self.missing), "dropped": sorted(self.dropped),
                "pos_embed_resized": None if grid is None else {"from": list(grid[0]), "to": list(grid[1])},
                "head": self.head,
                "file_classes": None if self.file_classes is None else list(self.file_classes)}

    def lines(self) -> list[str]:
        """A short human summary, one fact per line (for logs and the console)."""
        out = [f"loaded {self.path} ({self.format}): {len(self.loaded)} tensors",
               f"missing (trained from scratch): {sorted(self.missing) or 'none'}",
               f"dropped: {group_keys(self.dropped) or 'none'}"]
        if self.pos_embed_grid is not None:
            (a, b), (c, d) = self.pos_embed_grid
            out.append(f"pos_embed resized from a {a}x{b} to a {c}x{d} patch grid")
        if self.head == "reordered":
            out.append(f"head reordered from the file's class order {list(self.file_classes or ())}")
        elif self.head in ("unchecked", "dropped"):
            out.append(f"head {self.head}" + (" (file classes "
                                              f"{list(self.file_classes)})" if self.file_classes else
                                              " (the file does not say its class order)"))
        return out


def group_keys(keys: frozenset[str] | set[str]) -> str:
    """'decoder_blocks (12), mask_token (1)': tensor counts by the first name component."""
    counts = Counter(k.split(".")[0] for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))


def save_model(path: str | os.PathLike, model_state: Mapping[str, torch.Tensor], **extra: Any) -> Path:
    """Write {"model": model_state, **extra} to path (atomically: temp file, then rename). `extra` values
    must load under weights_only=True (tensors, numbers, strings, lists/dicts of them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": dict(model_state), **extra}, tmp)
    os.replace(tmp, path)
    return path


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict names of the classifier head (timm's get_classifier()): one row per class."""
    if not hasattr(model, "get_classifier"):
        return set()
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head_ids}


def _pretrain_only(key: str, target: Mapping[str, torch.Tensor]) -> bool:
    return key not in target and (key.startswith(PRETRAIN_ONLY) or key.startswith("norm."))


def load_encoder(model: nn.Module, path: str | os.PathLike, fmt: str = "auto",
                 label_names: Sequence[str] | None = None, *, require_head: bool = False) -> LoadReport:
    """Load the weights of `path` (format `fmt`, "auto": recognised) into `model`; see the module docstring.

    label_names: the model's class order (the store's). A file head whose classes are known is put into
    that order (rows selected by name) or dropped when they are other classes. require_head: the head
    must come from the file (evaluation). Raises CheckpointError naming the file and the keys when
    anything but the head/fc_norm is missing, when the file has keys the model lacks (beyond the
    pre-training-only ones) or when shapes differ. Load before wrapping the model in DDP."""
    model = unwrap(model)
    ck = open_checkpoint(path, fmt)
    path = shown(path, ck.path)  # a URI is named as the user gave it, not by its cached copy
    target = model.state_dict()
    classifier = _classifier_keys(model)
    head = classifier | {k for k in target if k.startswith("fc_norm.")}
    state, head_state, file_classes = _fit_head(ck, dict(ck.state), target, classifier, label_names)
    dropped = {k for k in ck.state if k not in state or _pretrain_only(k, target)}
    dropped |= {k for k in state if k in head and k in target and state[k].shape != target[k].shape}
    state = {k: v for k, v in state.items() if k not in dropped}
    grid = None
    if _other_grid(state.get("pos_embed"), target.get("pos_embed")):
        state["pos_embed"], grid = _resize_pos_embed(path, state["pos_embed"], model)
    _check_fit(ck, model, state, target, head)
    missing = frozenset(set(target) - set(state))
    if require_head and (missing & classifier or head_state in ("dropped", "absent")):
        raise CheckpointError(f"{path}: has no trained head for the classes {list(label_names or [])} "
                              f"(head {head_state}; file classes {list(file_classes or []) or 'not stated'})")
    model.load_state_dict(state, strict=False)
    report = LoadReport(path, ck.format, frozenset(state), missing, frozenset(dropped), grid, head_state,
                        file_classes)
    for line in report.lines():
        logger.info("%s", line)
    if head_state == "unchecked" and label_names is not None:
        logger.warning("%s: the file does not say its head's class order; assumed to be "
                       "%s", path, list(label_names))
    return report


def _fit_head(ck: CheckpointFile, state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor],
              classifier: set[str], label_names: Sequence[str] | None
              ) -> tuple[dict[str, torch.Tensor], HeadState, tuple[str, ...] | None]:
    """The file's classifier rows in the model's class order (state without them when they are other
    classes or another shape), the head's state and the file's class order when known."""
    present = sorted(k for k in classifier if k in state)
    if not classifier:
        return state, "none", None
    if not present:
        return state, "absent", None
    file_classes = ck.label_names(state[present[0]].shape[0])
    fits = all(state[k].shape == target[k].shape for k in present)
    if label_names is not None and file_classes is not None:
        if tuple(label_names) == file_classes:
            return state, "loaded", file_classes
        if (set(label_names) <= set(file_classes)
                and all(state[k].shape[1:] == target[k].shape[1:] for k in present)):
            rows = torch.tensor([file_classes.index(n) for n in label_names])
            return {**state, **{k: state[k][rows] for k in present}}, "reordered", file_classes
        fits = False
    if fits:
        return state, "unchecked", file_classes
    return {k: v for k, v in state.items() if k not in present}, "dropped", file_classes


def _check_fit(ck: CheckpointFile, model: nn.Module, state: Mapping[str, torch.Tensor],
               target: Mapping[str, torch.Tensor], head: set[str]) -> None:
    unexpected = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state) - head)
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
              for k, v in state.items() if k in target and v.shape != target[k].shape]
    problems = []
    if unexpected:
        problems.append(f"keys the model does not have: {unexpected}")
    if missing:
        problems.append(f"missing keys: {missing}")
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if problems:
        raise CheckpointError(f"{ck.path} ({ck.format}) does not fit {type(model).__name__}: "
                              "" + "; ".join(problems))


def _other_grid(source: torch.Tensor | None, target: torch.Tensor | None) -> bool:
    """Both pos_embeds [1, T, D] exist with the same width D but another token count T."""
    if source is None or target is None or source.ndim != 3 or target.ndim != 3:
        return False
    return source.shape[2] == target.shape[2] and source.shape[1] != target.shape[1]


def _resize_pos_embed(path: Path, pos_embed: torch.Tensor, model: nn.Module
                      ) -> tuple[torch.Tensor, tuple[tuple[int, int], tuple[int, int]]]:
    """pos_embed [1, P + Gs*Gs, D] from the file -> the model's patch grid (class token kept); also
    returns (source grid, model grid)."""
    grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", ()))
    prefix = getattr(model, "num_prefix_tokens", 1)
    if len(grid) != 2:
        raise CheckpointError(f"{path}: pos_embed {tuple(pos_embed.shape)} has another grid and "
                              f"{type(model).__name__} has no patch_embed.grid_size to resize it to")
    try:
        resized = interpolate_pos_embed(pos_embed, grid, num_prefix=prefix)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    side = round((pos_embed.shape[1] - prefix) ** 0.5)
    return resized, ((side, side), (int(grid[0]), int(grid[1])))
