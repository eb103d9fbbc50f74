"""A training run's lineage history and a test hook to time kills around its reports (no torch here:
study.trial imports this in the Train controller).

The lineage history is rank 0's reported metrics of every epoch that led to the current weights, oldest
first. In a worker, `trainers.runtime.restore_files` starts it (from the restored checkpoint's
`HISTORY_STATE`, else empty) and `trainers.runtime.report` extends it, saves it in each checkpoint
and sends it once, as JSON text under `HISTORY_METRIC`, with the first report after a restore.
Whoever logs the reports can thus fill in epochs it never saw, e.g. when the study's driver died
after a checkpoint was recorded and before its report was logged (study.trial, study.mlflow_callback).
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
HISTORY_STATE = "history"  # in CHECKPOINT_FILE: [rank 0's metrics of epoch 1, 2, ...] of the run's lineage
HISTORY_METRIC = "thoraxmae/lineage"  # the first report after a restore: that history as JSON text
HOLD_ENV = "THORAXMAE_TEST_HOLD"  # test hook "<point>:<phase>:<epoch>:<folder>", see `hold`
HOLD_LIMIT_S = 600.0


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


def hold(point: str, phase: str, epoch: Any) -> None:
    """Test hook for tests/reliability: when $THORAXMAE_TEST_HOLD is `<point>:<phase>:<epoch>:<folder>` and
    names this point, phase and epoch, write `<folder>/<point>` and wait until that file is removed
    (at most HOLD_LIMIT_S), so a test can kill the study at exactly this moment. `phase` matches the
    phase name or the end of a Train run name (`train-<trial>-<phase>`); `*` matches any phase.
    Points: `worker` (rank 0, an epoch done, before its report and checkpoint) and `forward`
    (study.trial: a Train checkpoint recorded, before its report is forwarded to Tune)."""
    want = os.environ.get(HOLD_ENV)
    if not want or epoch is None:
        return
    w_point, w_phase, w_epoch, folder = (want.split(":", 3) + ["", "", "", ""])[:4]
    if w_point != point or not w_epoch.isdigit() or int(w_epoch) != int(epoch) or not folder:
        return
    if w_phase != "*" and phase != w_phase and not phase.endswith(f"-{w_phase}"):
        return
    flag = Path(folder) / point
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text(f"{phase} {epoch} {os.getpid()}\n")
    log.warning("test hold at %s (%s, epoch %s): waiting until %s is removed", point, phase, epoch, flag)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
