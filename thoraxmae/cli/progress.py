"""Live study progress for the CLI (rich): trials running / completed / pruned / failed, best so far.

A Tune callback; it is pickled with Tune's state, so the console and the live display are made on
first use and dropped when pickled.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from thoraxmae.study import schema
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import TrialPlan
from thoraxmae.study.tracking.callback import trial_error, trial_status
from thoraxmae.study.tracking.results import PHASE_KEY


class StudyProgress(Callback):
    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.status: dict[str, str] = {}  # trial_id -> running | completed | pruned | failed
        self.epoch: dict[str, str] = {}  # trial_id -> "pretrain 3/10" | "finetune 2/5"
        self.trial_best: dict[str, float] = {}  # trial_id -> its best scored value so far
        self.started: dict[str, float] = {}
        self.first_report_s: list[float] = []  # trial start -> first epoch report (start-up + 1 epoch)
        self._live = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_live": None}

    # --- Tune events ---------------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        from rich.console import Console
        from rich.live import Live

        if not Console().is_terminal:  # a log file or CI: one plain line per trial event instead
            self._live = None
            return
        self._live = Live(self.render(), refresh_per_second=2, transient=False)
        self._live.start()

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.status[trial.trial_id] = schema.STATUS_RUNNING
        self.started[trial.trial_id] = time.monotonic()
        self._refresh(f"trial {trial.trial_id} started")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        tid = trial.trial_id
        if tid in self.started:
            self.first_report_s.append(time.monotonic() - self.started.pop(tid))
        phase = result.get(PHASE_KEY, self.spec.scored_phase)
        epoch = result.get(schema.M_EPOCH, result.get(f"pretrain/{schema.M_EPOCH}"))
        self.epoch[tid] = f"{phase} {epoch}"
        value = result.get(self.spec.metric)
        if isinstance(value, int | float) and math.isfinite(value) and phase == self.spec.scored_phase:
            pick = max if self.spec.mode == "max" else min
            self.trial_best[tid] = pick(float(value), self.trial_best.get(tid, float(value)))
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.status[trial.trial_id] = trial_status(TrialPlan.from_config(self.spec, trial.config),
                                                   trial.last_result or {})
        value = (trial.last_result or {}).get(self.spec.metric)
        shown = (f", {self.spec.metric} {value:.4f}"
                 if isinstance(value, int | float) and math.isfinite(value) else "")
        self._refresh(f"trial {trial.trial_id} {self.status[trial.trial_id]} at "
                      f"{self.epoch.get(trial.trial_id, '-')}{shown}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        from thoraxmae.study.tracking.lookup import error_line

        self.status[trial.trial_id] = schema.STATUS_FAILED
        self._refresh(f"trial {trial.trial_id} failed: {error_line(trial_error(trial))}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._refresh()
        if self._live is not None:
            self._live.stop()
            self._live = None

    # --- display ---------------------------------------------------------------------------------------
    @property
    def best(self) -> tuple[float, str] | None:
        """(value, trial id): the best value any trial that has not failed reported, by the study's mode."""
        alive = [(v, t) for t, v in self.trial_best.items() if self.status.get(t) != schema.STATUS_FAILED]
        if not alive:
            return None
        sign = 1 if self.spec.mode == "max" else -1
        return max(alive, key=lambda vt: sign * vt[0])

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(schema.TRIAL_STATUSES, 0)
        for s in self.status.values():
            out[s] += 1
        return out

    def render(self):
        from rich.table import Table

        c = self.counts()
        table = Table(title=f"study {self.spec.name} ({self.spec.stage}, {self.spec.search.num_samples} "
                            "trials)")
        for col in ("running", "completed", "pruned", "failed", f"best {self.spec.metric}"):
            table.add_column(col, justify="right")
        best = f"{self.best[0]:.4f} ({self.best[1]})" if self.best else "-"
        table.add_row(str(c[schema.STATUS_RUNNING]), str(c[schema.STATUS_COMPLETED]),
                      str(c[schema.STATUS_PRUNED]), str(c[schema.STATUS_FAILED]), best)
        running = [f"{tid}: {self.epoch.get(tid, 'starting')}" for tid, s in self.status.items()
                   if s == schema.STATUS_RUNNING]
        if running:
            table.caption = "running: " + ", ".join(running)
        return table

    def _refresh(self, event: str | None = None) -> None:
        """Update the live table; without a terminal, print `event` with the running totals."""
        if self._live is not None:
            self._live.update(self.render())
        elif event:
            c = self.counts()
            best = f"; best {self.spec.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
            print(f"[study {self.spec.name}] {event} | running {c[schema.STATUS_RUNNING]}, completed "
                  f"{c[schema.STATUS_COMPLETED]}, pruned {c[schema.STATUS_PRUNED]}, failed "
                  f"{c[schema.STATUS_FAILED]}{best}", flush=True)


@dataclass
class Outcome:
    """How a study's trials ended, from Tune's result grid (every trial of the study, all sessions).
    scored: trials that reported the study's metric in the scored phase (completed or pruned);
    failed: (trial id, error line); lost: trials Tune ended with neither a score nor an error."""

    total: int = 0
    scored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The study's exit status: at least one trial scored and none lost (failed trials are recorded)."""
        return bool(self.scored) and not self.lost


def outcome(spec: StudySpec, grid) -> Outcome:
    from thoraxmae.study.tracking.lookup import error_line

    out = Outcome(total=len(grid))
    for result in grid:
        metrics = result.metrics or {}
        tid = str(metrics.get("trial_id") or Path(str(result.path)).name)
        value = metrics.get(spec.metric)
        if result.error is not None:
            out.failed.append((tid, error_line(str(result.error))))
        elif (isinstance(value, int | float) and math.isfinite(value)
              and metrics.get(PHASE_KEY, spec.scored_phase) == spec.scored_phase):
            out.scored.append(tid)
        else:
            out.lost.append(tid)
    return out
