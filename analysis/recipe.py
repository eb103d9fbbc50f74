"""The recipe: what the top trials agree on, how sure we are, and how it compares with a reference.

Top-k: the best `top_fraction` of the completed trials (at least `min_k`; all scored trials when fewer
than `min_k` completed). Per knob the recommended value is the top-k median (int knobs rounded, log
knobs the geometric median, categoricals the most common choice) with the top-k range as its spread.

The searched `pre-training` knobs of a pipeline study are one recipe, not independent knobs: a trial
fine-tunes from the pre-training of its exact combination (study/registry.py), so per-knob
modes could recommend a combination no top trial was fine-tuned from (and that was never pre-trained).
They are chosen together: the combination most common among the top-k (ties: the better-ranked one).
"""
from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from thoraxmae.analysis.errors import ReportError
from thoraxmae.analysis.tables import KnobInfo, is_missing, rank_trials
from thoraxmae.study import schema


@dataclass
class KnobRecipe:
    knob: str
    kind: str
    value: Any  # recommended
    low: Any  # top-k range (min, max); for a categorical, the least / most common choice
    high: Any
    iqr: tuple[float, float] | None  # top-k interquartile range (numeric knobs)
    share: float  # categorical: share of top-k with the recommended choice; numeric: 1.0
    best_value: Any  # the best trial's value


@dataclass
class BestTrial:
    trial_id: str
    run_id: str
    status: str
    objective: float
    params: dict[str, Any]
    test: float
    test_ci: tuple[float, float]


@dataclass
class Confidence:
    """What the search alone says about the top-k (exploratory: one seed per trial, and the top-k were
    selected by these very scores, so their mean overstates what the recipe scores when re-run)."""

    k: int
    n_pool: int
    pool: str  # "completed" or "scored"
    n_scored: int
    topk_mean: float
    topk_ci: tuple[float, float]  # bootstrap 95% CI of the top-k's search scores (nan with one trial)
    best_gap: float  # best - runner-up (sign-adjusted: > 0 means the best is better)
    noise: float  # evaluation noise scale: median test/mauc CI half-width of the top-k (nan if not logged)
    best_beyond_noise: bool | None


@dataclass
class Recipe:
    knobs: list[KnobRecipe]
    best: BestTrial
    confidence: Confidence
    top: pd.DataFrame  # the top-k trials, best first

    def values(self) -> dict[str, Any]:
        return {r.knob: r.value for r in self.knobs}


@dataclass
class ReferenceRow:
    knob: str
    reference: Any
    recommended: Any
    agrees: bool | None  # None: no reference value for this knob
    diff: float  # recommended - reference (nan for categoricals)
    rel_diff: float  # diff / |reference|
    verdict: str


def distill_recipe(scored: pd.DataFrame, infos: list[KnobInfo], mode: str, top_fraction: float = 0.2,
                   min_k: int = 3, n_bootstrap: int = 1000, seed: int = 0) -> Recipe:
    """The recipe of the top-k trials. `scored` holds at least one trial."""
    ranked = rank_trials(scored, mode)
    completed = ranked[ranked["status"] == schema.STATUS_COMPLETED]
    pool, pool_name = (completed, "completed") if len(completed) >= min_k else (ranked, "scored")
    k = min(max(min_k, math.ceil(top_fraction * len(pool))), len(pool))
    top = pool.head(k).reset_index(drop=True)
    best = _best_trial(top.iloc[0], infos)
    knobs = _joint_pretrain([_knob_recipe(top, info, best.params.get(info.name)) for info in infos], top)
    conf = _confidence(top, pool, mode, pool_name, len(ranked), n_bootstrap, seed)
    return Recipe(knobs, best, conf, top)


def recipe_spec(spec: dict | None, recipe: Recipe, stage: str) -> dict:
    """The study's spec with each searched knob fixed to its recommended value and `search` removed
    (stage and everything else kept): a ready-to-run spec for the final training run."""
    out = copy.deepcopy(spec) if spec else {"stage": stage}
    out.pop("search", None)
    for r in recipe.knobs:
        phase, name = r.knob.split(".", 1)
        section = out.get(phase)
        if not isinstance(section, dict):
            section = out[phase] = {}
        section[name] = _plain(r.value)
    return out


def compare_reference(recipe: Recipe, reference: dict[str, Any]) -> list[ReferenceRow]:
    """Per searched knob: does the recipe agree with the reference (inside the top-k range), and by how
    much."""
    rows = []
    for r in recipe.knobs:
        ref = reference.get(r.knob)
        if ref is None:
            rows.append(ReferenceRow(r.knob, None, r.value, None, math.nan, math.nan, "no reference value"))
        elif r.kind == "categorical" or isinstance(ref, bool | str):
            agrees = ref == r.value
            verdict = ("agrees" if agrees
                       else f"disagrees: top trials prefer {r.value} ({r.share:.0%} of top-k)")
            rows.append(ReferenceRow(r.knob, ref, r.value, agrees, math.nan, math.nan, verdict))
        else:
            diff = float(r.value) - float(ref)
            rel = diff / abs(ref) if ref else math.nan
            agrees = float(r.low) <= float(ref) <= float(r.high)
            where = "inside" if agrees else "outside"
            direction = "higher" if diff > 0 else "lower"
            size = f"{abs(rel):.0%} {direction}" if math.isfinite(rel) else f"{abs(diff):.3g} {direction}"
            verdict = (f"{'agrees' if agrees else 'disagrees'}: recommended {r.value} is {size} than {ref}; "
                       f"{ref} is {where} the top-k range {r.low}–{r.high}")
            rows.append(ReferenceRow(r.knob, ref, r.value, agrees, diff, rel, verdict))
    return rows


def load_reference(path: Path) -> dict[str, Any]:
    """A reference recipe from YAML: flat (`finetune.layer_decay: 0.55`) or by section (a study spec's
    `finetune: {layer_decay: 0.55}`); ReportError naming the file otherwise."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: reference recipe not readable: {exc}") from None
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: a reference recipe is a mapping of knob: value, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, dict | list)})
        elif "." in str(key):
            out[str(key)] = value
    if not out:
        raise ReportError(f"{path}: no knob values found (expected e.g. `finetune.layer_decay: 0.55`)")
    return out


def _best_trial(row: pd.Series, infos: list[KnobInfo]) -> BestTrial:
    return BestTrial(trial_id=str(row["trial_id"]), run_id=str(row["run_id"]), status=str(row["status"]),
                     objective=float(row["objective"]), params={i.name: _plain(row[i.name]) for i in infos},
                     test=float(row[schema.M_TEST_MAUC]),
                     test_ci=(float(row[schema.M_TEST_MAUC_CI_LOW]), float(row[schema.M_TEST_MAUC_CI_HIGH])))


def _knob_recipe(top: pd.DataFrame, info: KnobInfo, best_value: Any) -> KnobRecipe:
    values = [_plain(v) for v in top[info.name].tolist() if not is_missing(v)]
    if not values:
        return KnobRecipe(info.name, info.kind, None, None, None, None, 0.0, best_value)
    if info.kind == "categorical":
        counts = Counter(values).most_common()
        tied = [v for v, c in counts if c == counts[0][1]]
        value = best_value if best_value in tied else tied[0]
        return KnobRecipe(info.name, info.kind, value, counts[-1][0], counts[0][0], None,
                          counts[0][1] / len(values), best_value)
    x = np.asarray(values, dtype=float)
    t = np.log(x) if info.log else x
    median = float(np.exp(np.median(t))) if info.log else float(np.median(t))
    q25, q75 = np.percentile(x, [25, 75])
    value = round(median) if info.kind == "int" else _round(median)
    low, high = (int(x.min()), int(x.max())) if info.kind == "int" else (_round(x.min()), _round(x.max()))
    return KnobRecipe(info.name, info.kind, value, low, high, (float(q25), float(q75)), 1.0, best_value)


def _joint_pretrain(knobs: list[KnobRecipe], top: pd.DataFrame) -> list[KnobRecipe]:
    """The searched pre-training knobs set to the top-k's most common combination (module docstring)."""
    names = [k.knob for k in knobs if k.knob.startswith("pretrain.")]
    if len(names) < 2:
        return knobs
    rows = [tuple(_plain(v) for v in row) for row in top[names].itertuples(index=False)
            if not any(is_missing(v) for v in row)]
    if not rows:
        return knobs
    counts = Counter(rows)
    most = max(counts.values())
    chosen = dict(zip(names, next(r for r in rows if counts[r] == most), strict=True))  # rows are best first
    out = []
    for k in knobs:
        if k.knob in chosen:
            share = sum(r[names.index(k.knob)] == chosen[k.knob] for r in rows) / len(rows)
            k = KnobRecipe(k.knob, k.kind, chosen[k.knob], k.low, k.high, k.iqr,
                           share if k.kind == "categorical" else k.share, k.best_value)
        out.append(k)
    return out


def _confidence(top: pd.DataFrame, pool: pd.DataFrame, mode: str, pool_name: str, n_scored: int, n_boot: int,
                seed: int) -> Confidence:
    """Top-k mean and its CI, and the best trial's lead over the pool's runner-up compared with the
    evaluation noise (test/mauc CI half-width)."""
    rng = np.random.default_rng(seed)
    sign = 1.0 if mode == "max" else -1.0
    y_top = top["objective"].to_numpy(dtype=float)
    topk_ci = (math.nan, math.nan)
    if len(y_top) > 1 and n_boot > 0:
        top_means = rng.choice(y_top, (n_boot, len(y_top))).mean(axis=1)
        topk_ci = tuple(float(v) for v in np.percentile(top_means, [2.5, 97.5]))
    values = pool["objective"].to_numpy(dtype=float)
    gap = float(sign * (values[0] - values[1])) if len(values) > 1 else math.nan
    half = ((top[schema.M_TEST_MAUC_CI_HIGH] - top[schema.M_TEST_MAUC_CI_LOW]) / 2).to_numpy(dtype=float)
    noise = float(np.nanmedian(half)) if np.isfinite(half).any() else math.nan
    best_beyond = bool(gap > noise) if math.isfinite(gap) and math.isfinite(noise) else None
    return Confidence(len(top), len(pool), pool_name, n_scored, float(y_top.mean()), topk_ci, gap, noise,
                      best_beyond)


def _round(v: float) -> float:
    return float(f"{float(v):.3g}")


def _plain(v: Any) -> Any:
    """numpy / pandas scalars to Python ones (for YAML and comparisons)."""
    if v is None or v is pd.NA:
        return None
    return v.item() if hasattr(v, "item") else v
