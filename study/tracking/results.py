"""The results a trial forwards to Ray Tune, encoded and decoded here and nowhere else.

A forwarded result is one rank-0 Train report plus the fields below (study/run/trial.py explains when each
is set). In a pipeline the pre-training epochs are renamed under `pretrain/` and carry the scored metric as
NaN, so ASHA counts only fine-tuning epochs.
- `PHASE_KEY`: "pretrain" | "finetune";
- `HISTORY_KEY`: a JSON list of the lineage's earlier forwarded results (after a restart, and when a
  finished phase is re-reported), so the MLflow callback back-fills epochs it lacks;
- `M_KEY` / `M_REUSED`: the shared pre-training (registry key) a pipeline trial fine-tunes from, and
  whether another trial ran it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from thoraxmae.study import schema

PHASE_KEY = "phase"
HISTORY_KEY = "thoraxmae/history"
M_KEY = "pretrain/key"
M_REUSED = "pretrain/reused"


def phase_metrics(metrics: dict[str, Any], phase: str, metric: str, pipeline: bool,
                  cost_offset: dict[str, float]) -> dict[str, Any]:
    """One rank-0 report as Tune should see it (see the module docstring)."""
    out = dict(metrics)
    if pipeline and phase == "pretrain":
        out = {(k if k.startswith("pretrain/") else f"pretrain/{k}"): v for k, v in metrics.items()}
        out[metric] = math.nan
    for key, offset in cost_offset.items():
        if key in out:
            out[key] = out[key] + offset
    out[PHASE_KEY] = phase
    return out


def with_history(result: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    return {**result, HISTORY_KEY: json.dumps(history)} if history else result


def without_history(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != HISTORY_KEY}


def pretrain_link(key: str, reused: bool) -> dict[str, Any]:
    return {M_KEY: key, M_REUSED: 1.0 if reused else 0.0}


@dataclass(frozen=True)
class Forwarded:
    """A forwarded result, decoded: its phase, its epoch in that phase, the shared pre-training it names."""

    result: dict[str, Any]
    phase: str
    pretrain_key: str | None
    reused: bool

    @classmethod
    def of(cls, result: dict[str, Any], default_phase: str) -> Forwarded:
        key = result.get(M_KEY)
        return cls(result, str(result.get(PHASE_KEY, default_phase)), key if isinstance(key, str) else None,
                   bool(result.get(M_REUSED)))

    def epoch(self, pipeline: bool) -> int | None:
        """This result's epoch in its own phase (a pipeline's pre-training epochs sit under `pretrain/`)."""
        step = self.result.get(f"pretrain/{schema.M_EPOCH}" if pipeline and self.phase == "pretrain"
                               else schema.M_EPOCH)
        return None if step is None else int(step)

    def lineage(self) -> list[dict[str, Any]]:
        return lineage_results(self.result)


def lineage_results(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier results of the lineage that `result` carries, oldest first."""
    text = result.get(HISTORY_KEY)
    if not isinstance(text, str):
        return []
    history = json.loads(text)
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
