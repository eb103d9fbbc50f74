"""A training run's lineage history and a test hook to time kills around its reports (no torch here:
study.run.trial imports this in the Train controller).

The lineage history is rank 0's reported metrics of every epoch that led to the current weights, oldest
first. In a worker, `trainers.runtime.restore_files` starts it (from the restored checkpoint's
`HISTORY_STATE`, else empty) and `trainers.runtime.report` extends it, saves it in each checkpoint
and sends it once, as JSON text under `HISTORY_METRIC`, with the first report after a restore.
Whoever logs the reports can thus fill in epochs it never saw, e.g. when the study's driver died
after a checkpoint was recorded and before its report was logged (study.run.trial, study.tracking.callback).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
HISTORY_STATE = "history"  # in CHECKPOINT_FILE: [rank 0's metrics of epoch 1, 2, ...] of the run's lineage
HISTORY_METRIC = "thoraxmae/lineage"  # the first report after a restore: that history as JSON text


class Lineage:
    """A run's lineage history in one worker process (see the module docstring); one per process,
    `LINEAGE`, since Ray Train runs one training loop per worker process."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float | int]] = []
        self.unsent = False

    def restart(self, epochs: Any) -> None:
        if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
            log.warning("checkpoint history is not a list of metric dicts; starting an empty one")
            epochs = []
        self.epochs = [dict(e) for e in epochs]
        self.unsent = bool(self.epochs)

    def record(self, metrics: Mapping[str, Any], send: bool) -> dict[str, Any]:
        """Append one epoch; returns the metrics to report (with the history when `send` and unsent)."""
        out = dict(metrics)
        if send and self.unsent:
            out[HISTORY_METRIC] = json.dumps(self.epochs)
            self.unsent = False
        self.epochs.append(plain_metrics(metrics))
        return out

    def saved(self) -> list[dict[str, float | int]]:
        return [dict(e) for e in self.epochs]


LINEAGE = Lineage()


def plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """The numbers of a report as plain Python values (they load under weights_only=True and dump to
    JSON); text values (JSON reports) are left out: only numbers become MLflow metrics."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if isinstance(value, int | np.integer | np.bool_):  # bool is an int
            out[key] = int(value)
        elif isinstance(value, float | np.floating):
            out[key] = float(value)
    return out


