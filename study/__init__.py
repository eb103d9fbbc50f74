"""thoraxmae study package: the study spec, Tune + Optuna + ASHA studies, MLflow tracking.

Rooms (docs/architecture.md), each importing only those below it:
- base: `errors`, `schema` (the run schema's names), `storage` (the storage tree), `registry` (shared
  pre-trainings);
- `spec/`: the typed spec (`model`), its checks, loading from YAML (`load`), search spaces, coverage, the
  typed trial plan;
- `tracking/`: MLflow (writer, Tune callback, forwarded results, lookup, removal, tracking URIs);
- `run/`: local Ray, the search, the trial driver, pre-training, tournament, confirmation, single runs,
  submission.

Importing this package loads nothing else: the names below are looked up on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thoraxmae.study.errors import SpecError
    from thoraxmae.study.spec.load import dump_spec, load_spec
    from thoraxmae.study.spec.model import StudySpec

_LAZY = {"SpecError": "thoraxmae.study.errors", "StudySpec": "thoraxmae.study.spec.model",
         "load_spec": "thoraxmae.study.spec.load", "dump_spec": "thoraxmae.study.spec.load"}
__all__ = ["SpecError", "StudySpec", "dump_spec", "load_spec"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'thoraxmae.study' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
