"""Tidy tables of a study: one row per trial, one row per (trial, epoch), and what each knob is.

Column names are the run schema's names: a knob column is its spec path (`finetune.layer_decay`),
a metric column its metric name (`test/mauc`). The objective is the study's `search.metric`;
`objective` is its best value over the epochs a trial ran (mode-aware), as the trainers select
the best-on-val weights, and `objective_final` is the last epoch's value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from thoraxmae.analysis.load import PretrainRecord, StudyRecord, TrialRecord
from thoraxmae.study import schema

SCORED = (schema.STATUS_COMPLETED, schema.STATUS_PRUNED)  # trials whose objective is final (ASHA: truncated)
COST_UNITS = {schema.M_COST_GPU_HOURS: "GPU-hours", schema.M_COST_CPU_HOURS: "CPU-hours"}
TRIAL_METRICS = (schema.M_TEST_MAUC, schema.M_TEST_MAUC_CI_LOW, schema.M_TEST_MAUC_CI_HIGH,
                 schema.M_EPOCH_TIME,
                 schema.M_THROUGHPUT)
LOG_DECADES = 2.0  # a positive float knob whose observed range spans >= 2 decades is read on a log scale


@dataclass(frozen=True)
class KnobInfo:
    """How a searched knob varies: kind float | int | categorical, its observed range or choices."""

    name: str
    kind: str
    log: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int") or (self.kind == "categorical" and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices))

    @property
    def varied(self) -> bool:
        return len(self.choices) > 1 if self.kind == "categorical" else self.low != self.high


def parse_value(text: str) -> Any:
    """An MLflow param string back to the Python value it was logged from (bool, int, float, str)."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def trial_table(study: StudyRecord) -> pd.DataFrame:
    """One row per trial: ids, status, searched knobs (typed), objective (best and final), epochs,
    test metrics, cost in `cost_hours` (`cost_unit` GPU-hours or CPU-hours) and timings.

    A trial that fine-tuned a shared pre-training (it carries a pre-training key) logged its fine-tuning
    hours only (`own_cost_hours`); its `cost_hours` adds `pretrain_share_hours`, the key's pre-training
    cost divided by the number of this study's trials that used the key (docs/mlflow-schema.md)."""
    cost_metric = cost_metric_of(study)
    shares = pretrain_shares(study, cost_metric)
    rows = [_trial_row(study, t, cost_metric, shares.get(t.trial_id, 0.0)) for t in study.trials]
    df = pd.DataFrame(rows)
    for knob in study.knobs:
        df[knob] = _typed_column([parse_value(t.params[knob]) if knob in t.params else None
                                  for t in study.trials])
    order = ["trial_id", "run_id", "status", *study.knobs]
    df = df[order + [c for c in df.columns if c not in order]]
    df.attrs.update(metric=study.metric, mode=study.mode, study=study.name)
    return df.sort_values(["start_time", "trial_id"], na_position="last").reset_index(drop=True)


def curve_table(study: StudyRecord) -> pd.DataFrame:
    """One row per (trial, epoch) of the objective metric: trial_id, run_id, status, epoch, value."""
    rows = [{"trial_id": t.trial_id, "run_id": t.run_id, "status": t.status, "epoch": step, "value": value}
            for t in study.trials for step, value in t.history.get(study.metric, [])]
    cols = ["trial_id", "run_id", "status", "epoch", "value"]
    return pd.DataFrame(rows, columns=cols).astype({"epoch": "int64", "value": "float64"})


def scored_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed and pruned trials with a finite objective (pruned: the value ASHA stopped them at,
    which is what the Optuna searcher saw). Failed and still-running trials are left out."""
    keep = trials["status"].isin(SCORED) & np.isfinite(trials["objective"].to_numpy(dtype=float))
    return trials[keep].reset_index(drop=True)


def rank_trials(scored: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Best first (ties broken by trial id, so the order is reproducible)."""
    ranked = scored.sort_values(["objective", "trial_id"], ascending=[mode == "min", True])
    return ranked.reset_index(drop=True)


def knob_infos(trials: pd.DataFrame, knobs: tuple[str, ...], space: dict[str, dict]) -> list[KnobInfo]:
    """Each knob's kind, read from the values trials ran with (the spec's space says when a numeric
    knob was searched as categorical, or on a log scale)."""
    out = []
    for knob in knobs:
        values = [v for v in trials[knob].tolist() if not is_missing(v)] if knob in trials else []
        declared = space.get(knob) or {}
        out.append(_knob_info(knob, values, declared))
    return out


def numeric_matrix(scored: pd.DataFrame, infos: list[KnobInfo]) -> np.ndarray:
    """[N, K] float features for models: numeric knobs as is (log10 on log knobs), other categoricals
    as the index of their choice."""
    cols = []
    for info in infos:
        values = scored[info.name].tolist()
        if info.numeric:
            col = np.array([math.nan if is_missing(v) else float(v) for v in values])
            cols.append(np.log10(col) if info.log else col)
        else:
            index = {c: i for i, c in enumerate(info.choices)}
            cols.append(np.array([float(index.get(v, np.nan)) for v in values]))
    return np.stack(cols, axis=1) if cols else np.zeros((len(scored), 0))


def cost_metric_of(study: StudyRecord) -> str:
    """cost/gpu_hours when any trial or pre-training run logged GPU time, else cost/cpu_hours."""
    runs = [t.metrics for t in study.trials] + [p.metrics for p in study.pretrains]
    gpu = any(m.get(schema.M_COST_GPU_HOURS, 0) > 0 for m in runs)
    return schema.M_COST_GPU_HOURS if gpu else schema.M_COST_CPU_HOURS


def linked_pretrain(study: StudyRecord, trial: TrialRecord) -> PretrainRecord | None:
    """The pre-training run a trial fine-tuned from: the run its tag names, else the study's run of its
    key."""
    if trial.pretrain_run:
        found = next((p for p in study.pretrains if p.run_id == trial.pretrain_run), None)
        if found is not None or trial.pretrain_run in study.missing_pretrain_runs:
            return found
    if trial.pretrain_key:
        return next((p for p in study.pretrains if p.key == trial.pretrain_key), None)
    return None


def pretrain_shares(study: StudyRecord, cost_metric: str) -> dict[str, float]:
    """trial id -> its share of its shared pre-training's cost (key cost / the study's trials with that
    key); nan when that cost is unknown. Trials without a key have no share (they pre-trained themselves)."""
    users: dict[str, int] = {}
    for t in study.trials:
        if t.pretrain_key:
            users[t.pretrain_key] = users.get(t.pretrain_key, 0) + 1
    out = {}
    for t in study.trials:
        if t.pretrain_key:
            run = linked_pretrain(study, t)
            cost = run.metrics.get(cost_metric, math.nan) if run is not None else math.nan
            out[t.trial_id] = cost / users[t.pretrain_key]
    return out


def max_epochs_of(study: StudyRecord, trial: TrialRecord) -> float:
    """The epochs a trial would have run without early stopping: its `<phase>.epochs` param, capped
    by the scheduler's max_t when the spec sets one."""
    phase = study.scored_phase
    epochs = trial.params.get(f"{phase}.epochs") or ((study.spec or {}).get(phase) or {}).get("epochs")
    if epochs is None:
        return math.nan
    scheduler = (((study.spec or {}).get("search") or {}).get("scheduler") or {})
    max_t = scheduler.get("max_t") if scheduler.get("type", "asha") == "asha" else None
    return float(min(int(epochs), int(max_t))) if max_t else float(epochs)


def _trial_row(study: StudyRecord, t: TrialRecord, cost_metric: str, share: float) -> dict[str, Any]:
    curve = [v for _, v in t.history.get(study.metric, []) if math.isfinite(v)]
    steps = [s for s, _ in t.history.get(study.metric, [])]
    best_i = (int(np.argmax(curve)) if study.mode == "max" else int(np.argmin(curve))) if curve else None
    row = {"trial_id": t.trial_id, "run_id": t.run_id, "status": t.status,
           "objective": curve[best_i] if curve else math.nan,
           "objective_final": curve[-1] if curve else math.nan,
           "best_epoch": float(steps[best_i]) if curve else math.nan,
           "epochs_run": float(max(steps)) if steps else 0.0,
           "max_epochs": max_epochs_of(study, t)}
    row.update({m: t.metrics.get(m, math.nan) for m in TRIAL_METRICS})
    row["own_cost_hours"] = t.metrics.get(cost_metric, math.nan)
    row["pretrain_share_hours"] = share
    own = row["own_cost_hours"]
    row["cost_hours"] = ((own if math.isfinite(own) else 0.0) + share if math.isfinite(share) and share
                         else own)
    row.update(pretrain_key=t.pretrain_key, pretrain_run=t.pretrain_run, pretrain_reused=t.pretrain_reused)
    row["cost_unit"] = COST_UNITS[cost_metric]
    row["start_time"] = pd.Timestamp(t.start_time, unit="s", tz="UTC") if t.start_time else pd.NaT
    row["duration_s"] = (t.end_time - t.start_time) if t.end_time and t.start_time else math.nan
    row["error"] = t.error
    return row


def _typed_column(values: list[Any]) -> pd.Series:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="boolean")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64")
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series([None if v is None else str(v) for v in values], dtype="string")


def _knob_info(knob: str, values: list[Any], declared: dict) -> KnobInfo:
    numeric = values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if declared.get("type") == "categorical" or not numeric:
        return KnobInfo(knob, "categorical", choices=tuple(sorted(set(values), key=_choice_order)))
    low, high = float(min(values)), float(max(values))
    kind = "int" if all(isinstance(v, int) for v in values) else "float"
    log = bool(declared.get("log")) or (kind == "float" and low > 0 and high / low >= 10 ** LOG_DECADES)
    return KnobInfo(knob, kind, log=log and low > 0, low=low, high=high)


def _choice_order(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0.0, str(v))


def is_missing(v: Any) -> bool:
    """None, pandas' NA or a float NaN (an absent param or metric)."""
    return v is None or v is pd.NA or (isinstance(v, float | np.floating) and math.isnan(v))


def fmt(v: Any, digits: int = 4) -> str:
    """The one way the report writes a value: missing as an en dash, bools and text as they are,
    integers (and integral floats below 1e6) without a decimal point, other floats to `digits`
    significant digits."""
    if is_missing(v):
        return "–"
    if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
        return str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    if math.isfinite(v) and float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{float(v):.{digits}g}"


def error_text(trace: str, limit: int = 300) -> str:
    """A logged error (often a whole traceback) as the line that says what went wrong, clipped."""
    from thoraxmae.study.tracking.lookup import error_line

    line = error_line(trace)
    return line if len(line) <= limit else line[:limit - 1] + "…"
