"""Pre-training recipes and encoders compared by their fine-tuned scores, and what pre-training reuse saved.

A pipeline study that searches `pretrain.*` knobs fine-tunes several trials from each pre-training
recipe; a fine-tuning study that searches `finetune.init` fine-tunes from several encoders. Either way
the question is the paper's (docs/paper.md "The paper's findings"): which pre-training gives the better
fine-tuned model. One row per recipe (trials grouped by their pre-training key when they carry one,
else by the values of the searched pre-training knobs) or per encoder: its trials by status, the best
fine-tuned score, and the mean of its first n **complete** fine-tunes (in trial order: the paper's point and
the coverage trials come first, and study.run.fair_asha never stops those), with n the same for every row
(the fewest complete fine-tunes any row has) and a t-based 95% interval over those n trials; and for a
pre-training its final `pretrain/loss` and cost. Recipes that differ in one knob only are paired, and a pair's
difference of means gets a Welch 95% interval (the trials of two recipes are not paired by seed here; a recipe
tournament's are: analysis/tournament_section.py). Pruned trials never enter a mean: a pruned score is the
score of a shorter fine-tune.

Reuse (docs/mlflow-schema.md "Pre-training runs"): the study's own pre-training runs are what it spent;
a study without reuse would have pre-trained once per scored trial. The parent run's
`cost/pretrain_<unit>` and `cost/pretrain_<unit>_no_reuse` are used when logged, else computed from the
runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

from thoraxmae.analysis.confirm import t_interval
from thoraxmae.analysis.load import StudyRecord
from thoraxmae.analysis.tables import SCORED, cost_metric_of, is_missing, linked_pretrain
from thoraxmae.study import schema

TOP_K = 3
INIT_KNOB = "finetune.init"
# MAE's defaults for natural images, the values the paper departs from for X-rays (docs/paper.md,
# "Pre-training"): mask ratio 0.75 (vs 0.90), random resized crop scale (0.2, 1.0) (vs (0.5, 1.0)) and
# the norm-pix loss on (vs off).
NATURAL_IMAGE_RECIPE: dict[str, Any] = {"pretrain.mask_ratio": 0.75, "pretrain.crop_min": 0.2,
                                        "pretrain.norm_pix_loss": True}
PAIRS_WITH_BEST_ONLY = 4  # with more rows than this on one knob, each row is paired with the best one only


@dataclass
class KnobPair:
    """Two rows of the table that differ in `knob` only: `a` (the paper's value when one is) vs `b`."""

    knob: str
    a: Any
    b: Any
    context: dict[str, Any]  # the other grouping knobs' shared values
    row_a: int  # positions in RecipeComparison.table
    row_b: int
    diff: float = math.nan  # mean of a's n complete fine-tunes minus b's
    low: float = math.nan  # Welch 95% interval of the difference (nan with n < 2)
    high: float = math.nan


@dataclass
class Reuse:
    """Pre-training compute of the study against a study that pre-trains in every trial."""

    unit: str  # CPU-hours | GPU-hours
    runs_spent: int  # this study's own pre-training runs
    hours_spent: float
    runs_no_reuse: int  # one pre-training per scored trial
    hours_no_reuse: float
    logged: bool  # the hours are the parent run's metrics (else computed from the runs)
    # another study -> the keys reused from it
    reused_from: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.hours_no_reuse / self.hours_spent if self.hours_spent > 0 else math.nan


@dataclass
class RecipeComparison:
    kind: str  # "pretrain" (pipeline recipes) | "encoder" (finetune.init)
    knobs: tuple[str, ...]  # the knobs that define a row
    table: pd.DataFrame  # one row per recipe or encoder, best first
    pairs: list[KnobPair]
    single: dict[str, Any]  # grouping knobs that took one value only (not compared)
    metric: str
    mode: str
    unit: str  # the cost unit, CPU-hours | GPU-hours
    reuse: Reuse | None = None
    notes: list[str] = field(default_factory=list)  # numbers not computed, and why
    # knob searched as a continuous range -> values seen
    continuous: dict[str, int] = field(default_factory=dict)


def compare_recipes(study: StudyRecord, trials: pd.DataFrame) -> RecipeComparison | None:
    """The comparison when the study varies its pre-training (a pipeline study searching `pretrain.*`
    knobs) or its encoder (`finetune.init` searched); None otherwise."""
    if study.stage == "pipeline" and any(k.startswith("pretrain.") for k in study.knobs):
        kind, knobs = "pretrain", tuple(k for k in study.knobs if k.startswith("pretrain."))
    elif INIT_KNOB in study.knobs and study.stage == "finetune":
        kind, knobs = "encoder", (INIT_KNOB,)
    else:
        return None
    notes: list[str] = []
    records = {t.trial_id: t for t in study.trials}
    keyed = any(t.pretrain_key for t in study.trials)
    continuous = {k: int(trials[k].nunique()) for k in knobs
                  if not keyed and not _discrete(study.space.get(k))}
    groups = [] if continuous else _groups(trials, records, knobs, kind)
    rows = [_row(study, trials.loc[idx], records, knobs, kind, notes) for idx in groups]
    _equal_n(rows)
    sign = 1.0 if study.mode == "max" else -1.0
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.assign(_order=-sign * table["best"].fillna(-sign * math.inf)).sort_values(
            ["_order", "label"]).drop(columns="_order").reset_index(drop=True)
    if kind == "encoder":
        table["label"] = encoder_labels(table["init"].tolist()) if not table.empty else []
    single = {k: table[k].iloc[0] for k in knobs if not table.empty and table[k].nunique(dropna=True) == 1}
    pairs = [p for k in knobs if k not in single for p in knob_pairs(table, k, knobs)]
    reuse = pretrain_reuse(study, trials)
    if study.missing_pretrain_runs:
        notes.append(f"pre-training run(s) {', '.join(f'`{r}`' for r in study.missing_pretrain_runs)} linked "
                     "from trials are not in MLflow: their loss and cost are unknown")
    unit = str(trials["cost_unit"].iloc[0]) if len(trials) else "CPU-hours"
    return RecipeComparison(kind, knobs, table, pairs, single, study.metric, study.mode, unit, reuse, notes,
                            continuous)


def _discrete(declared: dict | None) -> bool:
    """Whether a searched knob has a finite set of values (a categorical, an int range, a float range
    with a step: what study/spec/coverage.py covers); a knob the spec does not declare counts as discrete."""
    if not declared:
        return True
    return declared.get("type") in ("categorical", "int") or declared.get("step") is not None


def encoder_labels(paths: list[str]) -> list[str]:
    """Each checkpoint by its file name; parent folders are added to the names that would clash."""
    parts = [[x for x in PurePath(str(p)).parts if x != PurePath(str(p)).anchor] or [str(p)] for p in paths]
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(x[-d:]) for x, d in zip(parts, depth, strict=True)]
        clash = [i for i, label in enumerate(labels) if labels.count(label) > 1 and depth[i] < len(parts[i])
                 and len({str(paths[j]) for j, other in enumerate(labels) if other == label}) > 1]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1


def knob_pairs(table: pd.DataFrame, knob: str, knobs: tuple[str, ...]) -> list[KnobPair]:
    """Pairs of rows equal in every grouping knob but `knob`: the paper's value first when one of the
    two is it, else the higher number, else the better row (an encoder). Rows missing a knob value, and
    repeats of one value combination, are not paired."""
    others = [k for k in knobs if k != knob]
    seen: dict[tuple, int] = {}
    for i, row in table.iterrows():
        values = tuple(row[k] for k in knobs)
        if not any(is_missing(v) for v in values):
            seen.setdefault(values, int(i))
    keep = sorted(seen.values())
    paper = schema.PAPER_RECIPE.get(knob)
    pairs = []
    for x, i in enumerate(keep):
        for j in keep[x + 1:]:
            ri, rj = table.loc[i], table.loc[j]
            if any(ri[k] != rj[k] for k in others) or ri[knob] == rj[knob]:
                continue
            first = rj[knob] == paper or (ri[knob] != paper and _numeric(ri[knob]) and _numeric(rj[knob])
                                          and rj[knob] > ri[knob])  # else the better row (i) first
            a, b = (j, i) if first else (i, j)
            pairs.append(KnobPair(knob, table.loc[a, knob], table.loc[b, knob], {k: ri[k] for k in others}, a,
                                  b,
                                  *welch(table.loc[a, "complete_scores"], table.loc[b, "complete_scores"],
                                         int(table.loc[a, "k"]))))
    best = table.index[0] if len(table) else None
    if len(keep) > PAIRS_WITH_BEST_ONLY:
        pairs = [p for p in pairs if best in (p.row_a, p.row_b)]
    return pairs


def pretrain_reuse(study: StudyRecord, trials: pd.DataFrame) -> Reuse | None:
    """What pre-training reuse saved, for a study whose trials carry pre-training keys (else None)."""
    return reuse_summary(study, trials) if any(t.pretrain_key for t in study.trials) else None


def reuse_summary(study: StudyRecord, trials: pd.DataFrame) -> Reuse:
    """Own pre-training runs and their cost vs one pre-training per scored trial (docs/mlflow-schema.md)."""
    metric = cost_metric_of(study)
    unit_slug = metric.split("/", 1)[1]
    unit = str(trials["cost_unit"].iloc[0]) if len(trials) else "CPU-hours"
    own = [p for p in study.pretrains if p.own]
    spent = float(sum(p.metrics.get(metric, 0.0) for p in own))
    finished = trials["status"].isin(SCORED) & np.isfinite(trials["objective"].to_numpy(dtype=float))
    scored_ids = set(trials.loc[finished, "trial_id"])
    scored = [t for t in study.trials if t.pretrain_key and t.trial_id in scored_ids]
    costs = [linked_pretrain(study, t) for t in scored]
    no_reuse = float(sum(p.metrics.get(metric, math.nan) if p is not None else math.nan for p in costs))
    logged_spent = study.parent_metrics.get(schema.M_PRETRAIN_COST_SPENT.format(unit=unit_slug))
    logged_no_reuse = study.parent_metrics.get(schema.M_PRETRAIN_COST_NO_REUSE.format(unit=unit_slug))
    logged = logged_spent is not None and logged_no_reuse is not None
    reused: dict[str, list[str]] = {}
    for p in study.pretrains:
        if not p.own:
            reused.setdefault(p.study or "an unnamed study", []).append(p.key or p.run_id)
    return Reuse(unit, len(own), logged_spent if logged else spent, len(scored),
                 logged_no_reuse if logged else no_reuse, logged, {s: sorted(k) for s, k in reused.items()})


def _groups(trials: pd.DataFrame, records: dict, knobs: tuple[str, ...], kind: str) -> list[list[int]]:
    """Row indexes per recipe: by pre-training key when the trial carries one, else by the knob values;
    a trial without a key joins the one keyed recipe with its knob values (a trial that failed before
    it was given its pre-training)."""
    by: dict[tuple, list[int]] = {}
    for i, row in trials.iterrows():
        values = tuple(None if is_missing(row[k]) else row[k] for k in knobs)
        key = records[row["trial_id"]].pretrain_key if kind == "pretrain" else None
        by.setdefault(("key", key, values) if key else ("values", None, values), []).append(int(i))
    for group in [g for g in by if g[0] == "values"]:
        keyed = [g for g in by if g[0] == "key" and g[2] == group[2]]
        if len(keyed) == 1:
            by[keyed[0]] += by.pop(group)
    return [sorted(v) for v in by.values()]


def _row(study: StudyRecord, rows: pd.DataFrame, records: dict, knobs: tuple[str, ...], kind: str,
         notes: list[str]) -> dict[str, Any]:
    scores = rows.loc[rows["status"].isin(SCORED), "objective"].to_numpy(dtype=float)
    scores = scores[np.isfinite(scores)]
    ordered = np.sort(scores)[::-1] if study.mode == "max" else np.sort(scores)
    done = rows[(rows["status"] == schema.STATUS_COMPLETED)].sort_values("trial_id")
    complete = [float(v) for v in done["objective"].to_numpy(dtype=float) if math.isfinite(v)]
    counts = rows["status"].value_counts()
    out: dict[str, Any] = {k_: (_plain(rows[k_].dropna().iloc[0]) if k_ in rows and rows[k_].notna().any()
                                else None)
                           for k_ in knobs}
    out.update(trials=len(rows), **{s: int(counts.get(s, 0)) for s in schema.TRIAL_STATUSES},
               n_scored=len(scores),
               best=float(ordered[0]) if len(ordered) else math.nan,
               best_trial=_best_trial(rows, ordered), complete_scores=complete, n_complete=len(complete))
    if kind == "encoder":
        out["init"] = out["label"] = str(out[INIT_KNOB])  # the label becomes the file name once all are known
        return out
    out.update(_pretrain_columns(study, [records[t] for t in rows["trial_id"]], notes))
    out["label"] = out["key"] or ", ".join(f"{k_}={out[k_]}" for k_ in knobs)
    return out


def _pretrain_columns(study: StudyRecord, trials: list, notes: list[str]) -> dict[str, Any]:
    """The recipe's pre-training: its shared run (loss, cost, who ran it) or, for trials that each
    pre-trained themselves, the mean of their final losses and the sum of their pre-training costs."""
    metric = cost_metric_of(study)
    keyed = [t for t in trials if t.pretrain_key]
    out: dict[str, Any] = {"key": keyed[0].pretrain_key if keyed else None, "pretrain_run": None,
                           "pretrain_study": None, "shared": bool(keyed), "reused_from_other": False,
                           "users": len(keyed)}
    if not keyed:
        losses = [t.metrics[schema.M_PRETRAIN_LOSS] for t in trials if schema.M_PRETRAIN_LOSS in t.metrics]
        costs = [t.metrics[f"pretrain/{metric}"] for t in trials if f"pretrain/{metric}" in t.metrics]
        out.update(pretrain_loss=float(np.mean(losses)) if losses else math.nan,
                   pretrain_cost_hours=float(sum(costs)) if costs else math.nan, pretrainings=len(losses))
        return out
    runs = {r.run_id: r for t in keyed if (r := linked_pretrain(study, t)) is not None}
    if len(runs) > 1:
        notes.append(f"key `{out['key']}` links {len(runs)} pre-training runs; the first one is shown")
    run = next(iter(runs.values()), None)
    out.update(pretrain_run=run.run_id if run else keyed[0].pretrain_run, pretrainings=1,
               pretrain_study=run.study if run else None, reused_from_other=bool(run and not run.own),
               pretrain_loss=run.metrics.get(schema.M_PRETRAIN_LOSS, math.nan) if run else math.nan,
               pretrain_cost_hours=run.metrics.get(metric, math.nan) if run else math.nan)
    return out


def _best_trial(rows: pd.DataFrame, ordered: np.ndarray) -> str | None:
    if not len(ordered):
        return None
    hit = rows[rows["status"].isin(SCORED) & (rows["objective"] == ordered[0])]
    return str(hit.sort_values("trial_id")["trial_id"].iloc[0])


def _equal_n(rows: list[dict[str, Any]]) -> None:
    """Every row's mean over its first n complete fine-tunes, n the same for all rows (`k`; 0 when a row has
    none:
    then no row is compared), with a t-interval over those n (`topk_*` columns)."""
    n = min((r["n_complete"] for r in rows), default=0)
    for r in rows:
        first = np.array(r["complete_scores"][:n], dtype=float)
        low, high = t_interval(first)
        r.update(k=n, topk_mean=float(first.mean()) if n else math.nan, topk_low=low, topk_high=high)


def welch(a: list[float], b: list[float], n: int) -> tuple[float, float, float]:
    """(difference of means, Welch 95% interval) of the first n values of a and of b (nan below 2)."""
    from scipy import stats

    x, y = np.array(a[:n], dtype=float), np.array(b[:n], dtype=float)
    if n < 1:
        return math.nan, math.nan, math.nan
    diff = float(x.mean() - y.mean())
    if n < 2:
        return diff, math.nan, math.nan
    va, vb = x.var(ddof=1) / n, y.var(ddof=1) / n
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return diff, diff - half, diff + half


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
