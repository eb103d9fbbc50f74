"""Saving and loading weights, always with `torch.load(weights_only=True)`.

Formats are named by the caller, never guessed from the keys:
- "thoraxmae": our own file, a dict whose "model" is a state dict (pre-training: the full MAE in
  reference names; fine-tuning `best_model.pt`: timm names).
- "medical_mae": the paper's released file {'model', 'optimizer', 'epoch', 'scaler', 'args'} (docs/paper.md),
  whose `args` is a pickled argparse.Namespace: that one type is allow-listed for the safe unpickler.
- "timm": a plain state dict {name: tensor}.
`load_encoder` puts such weights into a classifier (or an MAE), drops what only pre-training uses,
resizes pos_embed to the model's patch grid and checks the exact sets of missing and left-out keys.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.models.unwrap import unwrap
from thoraxmae.trainers.pos_embed import interpolate_pos_embed

logger = logging.getLogger(__name__)

Format = Literal["thoraxmae", "medical_mae", "timm"]
FORMATS: tuple[str, ...] = ("thoraxmae", "medical_mae", "timm")
PRETRAIN_ONLY = ("decoder_", "mask_token")  # key prefixes an MAE has and a classifier never loads
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile,
               AttributeError, ImportError, IndexError, KeyError, TypeError)


@dataclass(frozen=True)
class LoadReport:
    """What load_encoder did. missing: model keys the file did not provide (only the classifier head and
    fc_norm may be); unexpected: file keys left out on purpose (MAE decoder and mask_token, the final
    `norm` when the model pools into fc_norm, a head of another shape); any other difference raises."""

    path: Path
    missing: frozenset[str]
    unexpected: frozenset[str]
    resized_pos_embed: bool


def save_model(path: str | os.PathLike, model_state: Mapping[str, torch.Tensor], **extra: Any) -> Path:
    """Write {"model": model_state, **extra} to path (atomically: temp file, then rename). `extra` values
    must load under weights_only=True (tensors, numbers, strings, lists/dicts of them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": dict(model_state), **extra}, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike, fmt: Format) -> dict[str, Any]:
    """The whole checkpoint dict of a "thoraxmae"/"medical_mae" file, or {"model": sd} for "timm"."""
    path = Path(path)
    if fmt not in FORMATS:
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r}; expected one of {FORMATS}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if fmt == "medical_mae":
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot be read as a {fmt} checkpoint ({first})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    if fmt == "timm":
        obj = {"model": obj}
    state = obj.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no 'model' state dict in the {fmt} checkpoint (keys: {sorted(obj)[:8]})")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {fmt} state dict has non-tensor entries {bad[:5]}")
    return obj


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict names of the classifier head (timm's get_classifier()) and fc_norm."""
    names = {n for n, _ in model.named_parameters() if n.startswith("fc_norm.")}
    if hasattr(model, "get_classifier"):
        head_ids = {id(p) for p in model.get_classifier().parameters()}
        names |= {n for n, p in model.named_parameters() if id(p) in head_ids}
    return names


def _pretrain_only(key: str, target: Mapping[str, torch.Tensor]) -> bool:
    return key not in target and (key.startswith(PRETRAIN_ONLY) or key.startswith("norm."))


def load_encoder(model: nn.Module, path: str | os.PathLike, fmt: Format) -> LoadReport:
    """Load the weights of `path` (format `fmt`) into `model`; see the module docstring. Raises
    CheckpointError naming the file and the keys when anything but the head/fc_norm is missing, when the
    file has keys the model lacks (beyond the pre-training-only ones) or when shapes differ. Load before
    wrapping the model in DDP (a wrapped model is looked through)."""
    path, model = Path(path), unwrap(model)
    state = dict(read_checkpoint(path, fmt)["model"])
    target = model.state_dict()
    head = _head_keys(model)
    dropped = {k for k in state if _pretrain_only(k, target)}
    dropped |= {k for k in state if k in head and k in target and state[k].shape != target[k].shape}
    state = {k: v for k, v in state.items() if k not in dropped}
    resized = False
    if _other_grid(state.get("pos_embed"), target.get("pos_embed")):
        state["pos_embed"] = _resize_pos_embed(path, state["pos_embed"], model)
        resized = True
    unexpected = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state))
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
              for k, v in state.items() if k in target and v.shape != target[k].shape]
    problems = []
    if unexpected:
        problems.append(f"keys the model does not have: {unexpected}")
    if set(missing) - head:
        problems.append(f"missing keys: {sorted(set(missing) - head)}")
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if problems:
        raise CheckpointError(f"{path} ({fmt}) does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    logger.info("loaded %s (%s): %d tensors, missing %s, left out %d%s", path, fmt, len(state), missing,
                len(dropped), ", pos_embed resized" if resized else "")
    return LoadReport(path, frozenset(missing), frozenset(dropped), resized)


def _other_grid(source: torch.Tensor | None, target: torch.Tensor | None) -> bool:
    """Both pos_embeds [1, T, D] exist with the same width D but another token count T."""
    if source is None or target is None or source.ndim != 3 or target.ndim != 3:
        return False
    return source.shape[2] == target.shape[2] and source.shape[1] != target.shape[1]


def _resize_pos_embed(path: Path, pos_embed: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """pos_embed [1, 1 + Gs*Gs, D] from the file -> the model's patch grid (class token kept)."""
    grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", ()))
    prefix = getattr(model, "num_prefix_tokens", 1)
    if len(grid) != 2:
        raise CheckpointError(f"{path}: pos_embed {tuple(pos_embed.shape)} has another grid and "
                              f"{type(model).__name__} has no patch_embed.grid_size to resize it to")
    try:
        return interpolate_pos_embed(pos_embed, grid, num_prefix=prefix)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
