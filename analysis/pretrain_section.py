"""The report's "Pre-training recipes" section: the numbers of analysis/pretraining.py in words.

One table row per pre-training recipe (or encoder), each knob value marked when it is the paper's X-ray
choice or MAE's natural-image default; one sentence per pair of recipes that differ in one knob only;
the exploratory caveat unless confirmation runs exist; and the compute that pre-training reuse saved.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from thoraxmae.analysis.analyze import StudyAnalysis
from thoraxmae.analysis.document import Block, Bullets, Section, Table
from thoraxmae.analysis.pretraining import NATURAL_IMAGE_RECIPE, KnobPair, RecipeComparison, Reuse
from thoraxmae.analysis.tables import fmt, is_missing
from thoraxmae.study import schema

TITLE = "Pre-training recipes"
EXPLORATORY = ("**Exploratory comparison**: each score is one search trial's (one seed, its own fine-tuning "
               "knobs), and the best-of-n column favours rows with more trials. Re-run the recipes with "
               "fresh, shared seeds (confirmation runs, or a recipe tournament's paired fine-tunes) before "
               "calling one better.")
CONFIRMED = ("These are search scores (one seed per trial); the confirmation runs in the Recipe section "
             "compare recipes seed by seed.")


def pretraining_section(a: StudyAnalysis) -> Section | None:
    """None when the study varies neither its pre-training nor its encoder."""
    c = a.pretraining
    if c is None:
        return None
    if c.continuous:
        ranges = ", ".join(f"`{k}` ({n} distinct values)" for k, n in c.continuous.items())
        text = (f"**Recipes not compared one by one**: searched as a continuous range: {ranges}; see "
                "Marginal effects. Recipes are compared here when their knobs are categorical (or ranges "
                "with a step), as a study with pre-training reuse and coverage runs them.")
        return Section(TITLE, [text, *_reuse_blocks(c.reuse)])
    if c.table.empty or not (c.table["n_scored"] > 0).any():
        return Section(TITLE, [f"**No comparison**: no trial of any {_what(c)} has a `{c.metric}` score.",
                               *_reuse_blocks(c.reuse)])
    blocks: list[Block] = [_intro(c), recipe_table(c)]
    statements = [pair_text(c, p) for p in c.pairs]
    statements += [f"`{k}`: only {value_text(k, v)} was run, so it is not "
                   "compared." for k, v in c.single.items()]
    paired = {p.knob for p in c.pairs}
    statements += [f"`{k}`: no two recipes differ in it alone, so it is not compared."
                   for k in c.knobs if k not in c.single and k not in paired]
    if statements:
        blocks.append(Bullets(statements))
    blocks.append(EXPLORATORY if a.confirmation is None else CONFIRMED)
    blocks += _reuse_blocks(c.reuse) if c.reuse is not None or c.kind == "encoder" else [_no_reuse_text(c)]
    if c.notes:
        blocks.append(Bullets([f"Not computed: {n}." for n in c.notes]))
    return Section(TITLE, blocks)


def summary_items(a: StudyAnalysis) -> list[str]:
    """The best pre-training recipe (or encoder) and the reuse figures, for the summary and the terminal."""
    c, items = a.pretraining, []
    if c is not None and not c.table.empty and not is_missing(c.table["best"].iloc[0]):
        best = c.table.iloc[0]
        what = (f"Best encoder: `{best['label']}`" if c.kind == "encoder" else
                "Best pre-training recipe: " + ", ".join(f"`{k}` {value_text(k, best[k])}" for k in c.knobs))
        items.append(f"{what} (best `{c.metric}` {best['best']:.4f}; see {TITLE}).")
    return items + ([reuse_text(a.reuse)] if a.reuse is not None else [])


def value_text(knob: str, value: Any) -> str:
    """A knob value, marked when it is the paper's X-ray choice or MAE's natural-image default."""
    text = fmt(value)
    if knob in schema.PAPER_RECIPE and value == schema.PAPER_RECIPE[knob]:
        return f"{text} (paper, X-rays)"
    if knob in NATURAL_IMAGE_RECIPE and value == NATURAL_IMAGE_RECIPE[knob]:
        return f"{text} (MAE, natural images)"
    return text


def recipe_table(c: RecipeComparison) -> Table:
    score = f"best `{c.metric}` (trial)"
    if c.kind == "encoder":
        header = ["encoder", "`finetune.init`", "trials", score, "mean of n complete (95% CI)"]
        rows = [[f"`{r['label']}`", f"`{r['init']}`", trials_text(r), _best_text(r), topk_text(r)]
                for _, r in c.table.iterrows()]
        return Table(header, rows)
    header = [*[f"`{k}`" for k in c.knobs], "trials", score, "mean of n complete (95% CI)",
              f"final `{schema.M_PRETRAIN_LOSS}`",
              f"pre-training cost ({c.unit})", "share per trial"]
    rows = []
    for _, r in c.table.iterrows():
        rows.append([*[value_text(k, r[k]) for k in c.knobs], trials_text(r), _best_text(r), topk_text(r),
                     *_pretrain_cells(r)])
    return Table(header, rows)


def trials_text(r: pd.Series) -> str:
    """`4: 3 completed, 1 pruned` (failed and running trials named when there are any)."""
    parts = [f"{r[s]} {s}" for s in schema.TRIAL_STATUSES if r[s] or s in (schema.STATUS_COMPLETED,
                                                                             schema.STATUS_PRUNED)]
    return f"{r['trials']}: {', '.join(parts)}"


def topk_text(r: pd.Series) -> str:
    if not r["k"]:
        return "–"
    if r["k"] == 1:
        return f"{r['topk_mean']:.4f} (n = 1 complete: no interval)"
    return (f"{r['topk_mean']:.4f} ({r['topk_low']:.4f}–{r['topk_high']:.4f}), "
            f"n = {r['k']} of {r['n_complete']} complete")


def pair_text(c: RecipeComparison, p: KnobPair) -> str:
    """`pretrain.mask_ratio` 0.9 vs 0.75 at `pretrain.crop_min` 0.5: best ... vs ...; top-k means ...."""
    a, b = c.table.loc[p.row_a], c.table.loc[p.row_b]
    if c.kind == "encoder":
        head = f"`{a['label']}` vs `{b['label']}`"
    else:
        head = f"`{p.knob}` {value_text(p.knob, p.a)} vs {value_text(p.knob, p.b)}"
        if p.context:
            head += " at " + ", ".join(f"`{k}` {value_text(k, v)}" for k, v in p.context.items())
    text = f"{head}: best {_score(a['best'])} vs {_score(b['best'])}"
    n = int(a["k"])
    if not n:
        return text + "; means not compared (a recipe without a complete fine-tune)."
    text += (f"; mean of {n} complete fine-tune{'s' if n > 1 else ''} each {a['topk_mean']:.4f} vs "
             f"{b['topk_mean']:.4f}, difference {p.diff:+.4f}")
    if not math.isfinite(p.low):
        return text + " (one fine-tune each: no interval, not compared)."
    text += f" (95% CI {p.low:+.4f} to {p.high:+.4f}, Welch)"
    if p.low <= 0 <= p.high:
        return text + ": not told apart."
    better = a if (p.diff > 0) == (c.mode == "max") else b
    return text + f": {_side(c, p, better)} scores better at this n."


def reuse_text(r: Reuse) -> str:
    """`pre-training: 4 runs, 0.21 CPU-hours spent; without reuse 10 runs, 0.52 CPU-hours (2.5x)`."""
    ratio = f" ({r.ratio:.1f}x)" if math.isfinite(r.ratio) else ""
    no_reuse = f"{r.hours_no_reuse:.3g} {r.unit}" if math.isfinite(r.hours_no_reuse) else f"unknown {r.unit}"
    return (f"Pre-training: {_n(r.runs_spent, 'run')}, {r.hours_spent:.3g} {r.unit} spent; without reuse "
            f"{_n(r.runs_no_reuse, 'run')}, {no_reuse}{ratio}.")


def _reuse_blocks(r: Reuse | None) -> list[Block]:
    if r is None:
        return []
    source = ("as the study logged them on its parent run" if r.logged else
              "computed from the runs: this study's own pre-training runs, and one pre-training per scored "
              "trial")
    items = [f"**{reuse_text(r)}** ({source}.)"]
    for study, keys in r.reused_from.items():
        items.append(f"Reused from study `{study}` (its cost was spent there): "
                     f"{', '.join(f'`{k}`' for k in keys)}.")
    items.append("A trial's cost in this report is its fine-tuning plus its share of its recipe's "
                 "pre-training (the pre-training's cost divided by the study's trials that used it).")
    return [Bullets(items)]


def _no_reuse_text(c: RecipeComparison) -> str:
    """A pipeline study whose trials carry no pre-training key: each pre-trained for itself."""
    runs = int(c.table["pretrainings"].sum())
    hours = float(c.table["pretrain_cost_hours"].sum(min_count=1))
    cost = f"{hours:.3g} {c.unit}" if math.isfinite(hours) else f"{c.unit} not logged"
    return (f"No pre-training reuse: each trial pre-trained for itself ({_n(runs, 'pre-training')} of "
            f"{_n(len(c.table), 'recipe')}, {cost}).")


def _intro(c: RecipeComparison) -> str:
    n = int(c.table["k"].iloc[0]) if not c.table.empty else 0
    scores = (f"Scores are `{c.metric}` at each trial's best epoch ({c.mode}imised). Rows are compared at "
              f"equal n: the mean of each row's first n = {n} complete fine-tunes (the fewest any row has; "
              "pruned trials never count, and the paper's point and coverage trials are never pruned), with "
              "a t-based 95% interval over those trials.")
    if c.kind == "encoder":
        return ("Each encoder the study fine-tuned from (`finetune.init`, by file name), its fine-tuning "
                f"recipe searched alike. {scores} The paper found in-domain (X-ray) MAE pre-training better "
                "than ImageNet pre-training.")
    paper = ", ".join(f"`{k}` {fmt(schema.PAPER_RECIPE[k])} vs {fmt(NATURAL_IMAGE_RECIPE[k])}"
                      for k in NATURAL_IMAGE_RECIPE if k in c.knobs)
    where = f" The paper's X-ray choices vs MAE's natural-image defaults: {paper}." if paper else ""
    return ("Each pre-training recipe (a value of the searched pre-training knobs), scored by the "
            "fine-tuned result of its trials, as the paper compared recipes (reconstruction loss does not "
            f"rank them).{where} {scores}")


def _pretrain_cells(r: pd.Series) -> list[str]:
    if not r["shared"]:
        n = r["pretrainings"]
        return [f"{fmt(r['pretrain_loss'])} (mean of {n})" if n else "–",
                f"{_hours(r['pretrain_cost_hours'])} ({n} pre-trainings)" if n else "–", "– (no reuse)"]
    cost = _hours(r["pretrain_cost_hours"])
    if r["reused_from_other"]:
        cost += f" (spent by study `{r['pretrain_study']}`)"
    share = r["pretrain_cost_hours"] / r["users"] if r["users"] else math.nan
    return [fmt(r["pretrain_loss"]), cost, f"{_hours(share)} ({_n(r['users'], 'trial')})"]


def _side(c: RecipeComparison, p: KnobPair, row: pd.Series) -> str:
    return f"`{row['label']}`" if c.kind == "encoder" else fmt(row[p.knob])


def _best_text(r: pd.Series) -> str:
    return "–" if is_missing(r["best"]) else f"{r['best']:.4f} (`{r['best_trial']}`)"


def _score(v: float) -> str:
    return "–" if is_missing(v) else f"{v:.4f}"


def _hours(v: float) -> str:
    return "–" if is_missing(v) else f"{v:.3g}"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _what(c: RecipeComparison) -> str:
    return "encoder" if c.kind == "encoder" else "pre-training recipe"
