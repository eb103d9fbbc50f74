"""Checkpoint files: which format a file is, recognised from its content, and reading it safely.

Formats (`CheckpointFormat` in trainers/config.py is the one list of them):
- "thoraxmae": our file, a dict whose "model" is a state dict, beside it "epoch", "model_config",
  "label_names" (the head's class order), ...
- "medical_mae": the paper's released file {'model', 'optimizer', 'epoch', 'scaler', 'args'} (docs/paper.md),
  whose `args` is a pickled argparse.Namespace.
- "timm": a plain state dict {name: tensor}.
Every read is `torch.load(weights_only=True)`; argparse.Namespace is the one type allow-listed beside
tensors, numbers, strings and containers. A file that is none of the three, or that pickles anything
else, raises CheckpointError naming the file, the formats tried and what was found.

    fmt = check_checkpoint("vit-s_CXR_0.3M_mae.pth")   # "medical_mae"; reads no tensor data
    ck = open_checkpoint(path)                          # CheckpointFile: .format, .state, .label_names()
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from thoraxmae.trainers.config import CheckpointFormat
from thoraxmae.trainers.errors import CheckpointError

FORMATS: tuple[str, ...] = get_args(CheckpointFormat)
SAFE_GLOBALS = [argparse.Namespace]  # the released files' `args`
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile,
               AttributeError, ImportError, IndexError, KeyError, TypeError, UnicodeDecodeError, struct.error)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")

# docs/paper.md: the class order of the paper's fine-tuned heads, by the released file's `args.dataset`.
NIH_ORDER = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
             "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
             "Hernia")
CHEXPERT_REFERENCE_ORDER = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
COVIDX_REFERENCE_ORDER = ("normal", "positive", "pneumonia", "COVID-19")
RELEASED_CLASS_ORDERS = {"chestxray": NIH_ORDER, "chexpert": CHEXPERT_REFERENCE_ORDER,
                         "covidx": COVIDX_REFERENCE_ORDER}


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint read from `path`: its format and its whole dict ({"model": sd} for a timm file)."""

    path: Path
    format: str
    content: dict[str, Any]

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.content["model"]

    @property
    def args(self) -> argparse.Namespace | None:
        """The released file's training arguments (None for the other formats)."""
        args = self.content.get("args")
        return args if isinstance(args, argparse.Namespace) else None

    def label_names(self, num_outputs: int) -> tuple[str, ...] | None:
        """The class order of a head with `num_outputs` rows, when the file says it: our files store it,
        a released file implies it by its `args.dataset`; None when unknown (a timm state dict)."""
        names: Any = self.content.get("label_names")
        if names is None and self.args is not None:
            names = RELEASED_CLASS_ORDERS.get(getattr(self.args, "dataset", "chestxray"))
        if names is None or len(names) != num_outputs:
            return None
        return tuple(str(n) for n in names)


def check_checkpoint(path: str | os.PathLike) -> str:
    """The format of `path` (one of FORMATS), recognised from its content without reading tensor data
    (memory-mapped): cheap enough to call before Ray starts. CheckpointError when it is none of them."""
    return open_checkpoint(path).format


def open_checkpoint(path: str | os.PathLike, fmt: str = "auto") -> CheckpointFile:
    """Read `path` safely and recognise its format; with an explicit `fmt` the content must be that format.
    An object-store URI (`s3://...`) is fetched once into the node's cache first
    (datasets.storage.local_file)."""
    path = _local(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r}; expected 'auto' or one of "
                              f"{list(FORMATS)}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    obj = _safe_load(path)
    found, what = classify(obj)
    if found is None:
        raise CheckpointError(f"{path}: not a checkpoint of a known format (tried {', '.join(FORMATS)}): "
                              f"found {what}")
    if fmt != "auto" and fmt != found:
        raise CheckpointError(f"{path}: is a {found} checkpoint ({what}), not {fmt}; "
                              f"set the format to {found!r} or 'auto'")
    return CheckpointFile(path, found, {"model": obj} if found == "timm" else obj)


def _local(path: str | os.PathLike) -> Path:
    from thoraxmae.datasets.errors import DataError
    from thoraxmae.datasets.storage import local_file

    try:  # a local path as it is; an object-store file fetched once per node
        return local_file(str(path))
    except DataError as exc:
        raise CheckpointError(str(exc)) from None


def read_checkpoint(path: str | os.PathLike, fmt: str = "auto") -> dict[str, Any]:
    """The whole checkpoint dict of a "thoraxmae"/"medical_mae" file, or {"model": sd} for "timm"."""
    return open_checkpoint(path, fmt).content


def classify(obj: Any) -> tuple[str | None, str]:
    """(format or None, a short description of what `obj` is) for a safely unpickled object."""
    if not isinstance(obj, Mapping):
        return None, f"a {type(obj).__name__}, not a dict"
    if not obj:
        return None, "an empty dict"
    if _is_state_dict(obj):
        return "timm", f"a state dict of {len(obj)} tensors"
    model = obj.get("model")
    keys = sorted(map(str, obj))
    if isinstance(model, Mapping) and _is_state_dict(model):
        if isinstance(obj.get("args"), argparse.Namespace):
            return ("medical_mae",
                    f"a dict {keys[:8]} with a state dict of {len(model)} tensors and argparse args")
        return "thoraxmae", f"a dict {keys[:8]} with a state dict of {len(model)} tensors"
    if isinstance(model, Mapping):
        bad = [str(k) for k, v in model.items() if not isinstance(v, torch.Tensor)]
        return None, f"a dict whose 'model' entry has non-tensor entries {bad[:5]}"
    return None, f"a dict with keys {keys[:12]} and no 'model' state dict"


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _safe_load(path: Path) -> Any:
    """torch.load(weights_only=True) with the one allow-listed type; a zip file is memory-mapped, so
    tensors are read only when used. Errors become CheckpointError without torch's own advice."""
    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except LOAD_ERRORS as err:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (tried {', '.join(FORMATS)}): "
                              f"{_why(err, is_zip)}") from None


def _why(err: BaseException, is_zip: bool) -> str:
    """What was found, in our words: torch's message is not repeated (it advises unsafe loading)."""
    text = _ANSI.sub("", str(err))
    refused = _GLOBAL.search(text)
    if refused:
        return (f"it pickles `{refused.group(1)}`, which a safe (weights-only) load never runs; only "
                "tensors, numbers, strings, containers and argparse.Namespace are read")
    if is_zip:
        return "found a zip archive that is not a torch.save file"
    if isinstance(err, EOFError) or not text.strip():
        return "found an empty or truncated file"
    return "found neither a torch.save archive nor a pickle of tensors"
