"""The report's sections, assembled from the computed analysis into the document model of
analysis/document.py (analysis/render.py writes it as HTML or Markdown).

The claims (recipe, importance, reference) are worded in analysis/claims.py; this module adds the
summary and the descriptive sections. Every part that could not be computed says so, and why, in a
visible line of its section.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from thoraxmae.analysis.analyze import StudyAnalysis
from thoraxmae.analysis.claims import (
    headline,
    importance_section,
    noise_note,
    recipe_section,
    reference_section,
    unscored_reason,
)
from thoraxmae.analysis.document import Block, Bullets, Section, Table, figure
from thoraxmae.analysis.effects import MIN_TRIALS_SURROGATE
from thoraxmae.analysis.pretrain_section import pretraining_section, reuse_text, summary_items
from thoraxmae.analysis.tables import error_text, fmt, is_missing, rank_trials
from thoraxmae.study import schema

__all__ = ["build_sections", "effects_takeaway", "fmt"]


def build_sections(a: StudyAnalysis, figures: dict[str, Path], recipe_text: str) -> list[Section]:
    sections = [_summary(a), recipe_section(a, recipe_text), pretraining_section(a),
                importance_section(a, figures),
                _effects(a, figures), _search(a, figures), _cost(a, figures), reference_section(a),
                _trials(a)]
    return [s for s in sections if s is not None]


def _summary(a: StudyAnalysis) -> Section:
    s, r, imp = a.study, a.recipe, a.importance
    counts = ", ".join(f"{n} {k}" for k, n in a.status_counts.items())
    blocks: list[Block] = [
        Bullets(headline(a)),  # the verdict first (or the label saying there is none yet)
        (f"Study **{s.name}** (stage `{s.stage}`), {len(a.trials)} trials: {counts}. Objective `{s.metric}` "
         f"({s.mode}imised, each trial's best epoch), read from MLflow at `{s.tracking_uri}`.")]
    items = []
    if r is not None:
        items.append(f"Best trial `{r.best.trial_id}`: {s.metric} = {r.best.objective:.4f}"
                     + (f", test/mauc {r.best.test:.4f} (95% CI "
                        f"{r.best.test_ci[0]:.4f}–{r.best.test_ci[1]:.4f})"
                        if math.isfinite(r.best.test) else "") + ".")
    if imp.ranked:
        items.append(_top_knob(a))
    else:
        items.append(f"Importance: **cannot rank importance** ({imp.reason}).")
    if r is not None:
        items.append("Recipe: " + ", ".join(f"`{k.knob}` = {fmt(k.value)}" for k in r.knobs) + ".")
    items += summary_items(a)
    blocks.append(Bullets(items))
    return Section("Summary", blocks)


def _top_knob(a: StudyAnalysis) -> str:
    imp = a.importance
    top = imp.rows[0]
    if imp.statements:
        first = imp.statements[0]
        stability = f"first in {top.p_first:.0%} of {imp.n_resamples} bootstrap resamples" + (
            "" if first.stable else f"; but not told apart from `{first.lower}`: the order holds in only "
                                    f"{first.support:.0%} of the resamples")
    else:
        stability = f"rank stability not checked: {imp.stability_note}"
    noise = noise_note(a, top.knob)
    noise = f"; {noise}" if noise else ("; exploratory: not checked against seed "
                                        "noise" if a.confirmation is None
                                        else "")
    return (f"Most important knob: `{top.knob}` ({top.fanova:.0%} of the variance by fANOVA; {stability}"
            f"{noise}).")


def _effects(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    mode = a.study.mode
    title = "Marginal effects and interaction"
    if a.scored.empty:
        return Section(title, [f"**No marginal effects**: {unscored_reason(a)}."])
    intro = ("Dots: mean objective of the scored trials in each bin of the knob, with a bootstrap 95% CI. "
             "Raw bins can be confounded when the sampler moved several knobs together; the dashed line (a "
             "random forest's partial dependence) averages the other knobs out.")
    if a.confirmation is None:
        intro += (" A \"clear effect\" is clear against the other trials, not against seed noise "
                  "(no confirmation runs).")
    takeaways = []
    for e in a.effects:
        note = noise_note(a, e.knob)
        takeaways.append(e.takeaway(mode) + (f"; {note}" if note else ""))
    blocks: list[Block] = [intro, figure(figures, "effects", "Marginal effects", effects_takeaway(a),
                                         "no knob has a value in a scored trial"), Bullets(takeaways)]
    if a.effects and all(e.pd_y is None for e in a.effects):
        blocks.append("No partial dependence (dashed line): the random forest needs at least "
                      f"{MIN_TRIALS_SURROGATE} scored trials with every knob's value ({len(a.scored)} scored "
                      "here).")
    it = a.interaction
    if it is not None:
        take = (f"Best region: `{it.x_knob}` ≈ {fmt(it.best_x)} with `{it.y_knob}` ≈ {fmt(it.best_y)} "
                f"(partial dependence {it.best_value:.4f}).")
        blocks.append(figure(figures, "interaction", "Interaction of the top-2 knobs", take, "not drawn"))
    else:
        why = f"importance is not ranked ({a.importance.reason})" if not a.importance.ranked else (
            f"the random forest needs at least {MIN_TRIALS_SURROGATE} scored trials with every knob's value")
        blocks.append(f"**No interaction plot**: {why}.")
    return Section(title, blocks)


def effects_takeaway(a: StudyAnalysis) -> str:
    """One line for the marginal-effects figure: which knobs show a clear effect, and where."""
    mode = a.study.mode
    groups: dict[str, list[str]] = {}
    for e in a.effects:
        name = f"`{e.knob}` (best around {e.best.label})" if e.verdict(mode) == "clear" else f"`{e.knob}`"
        groups.setdefault(e.verdict(mode), []).append(name)
    parts = [f"{label}: {', '.join(groups[kind])}" for kind, label in (
        ("clear", "Clear effect"), ("unclear", "no clear effect"),
        ("confounded", "differences due to other knobs"),
        ("few", "too few values")) if kind in groups]
    return ("; ".join(parts) + ".") if parts else "No knobs to show."


def _search(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    t = a.trials
    n_failed = int((t["status"] == schema.STATUS_FAILED).sum())
    if a.scored.empty:
        hist = f"No trial was scored; the {n_failed} failed trial(s) are marked by vertical lines."
    else:
        best = rank_trials(a.scored, a.study.mode).iloc[0]
        pos = int(t.index[t["trial_id"] == best["trial_id"]][0])
        later = len(t) - pos - 1
        hist = (f"The best value ({best['objective']:.4f}, trial `{best['trial_id']}`) came at trial "
                f"{pos + 1} of {len(t)}; {later} trials ran after "
                "it" + (" without improving on it." if later else "."))
    blocks: list[Block] = [figure(figures, "history", "Optimisation history", hist, "not drawn")]
    r = a.recipe
    top = r.knobs[0] if r is not None and r.knobs else None
    par = (f"The top-{r.confidence.k} trials (thick lines) keep `{top.knob}` within "
           f"{fmt(top.low)}–{fmt(top.high)}."
           if top is not None and top.kind != "categorical" and not is_missing(top.low)
           else "Top trials drawn thick.")
    blocks.append(figure(figures, "parallel", "Parallel coordinates", par, "no scored trial"))
    pruned = a.curves[a.curves["status"] == schema.STATUS_PRUNED].groupby("trial_id")["epoch"].max()
    stops = (f"{len(pruned)} pruned trials stopped at epoch {int(pruned.min())}–{int(pruned.max())}"
             if len(pruned)
             else "no trial was pruned")
    curves = stops[0].upper() + stops[1:] + "."
    if r is not None:
        final = r.top["objective_final"]
        curves = f"The top trials end at {final.min():.4f}–{final.max():.4f}; {stops}."
    blocks.append(figure(figures, "curves", "Learning curves", curves, f"no trial logged `{a.study.metric}`"))
    return Section("The search", blocks)


def _cost(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    c = a.cost
    rows = [["compute of all trials (fine-tuning + their shares of the shared pre-trainings)" if a.reuse
             else "compute spent (all trials)", f"{c.total:.3g} {c.unit}"],
            ["pruned trials", str(c.n_pruned)],
            ["epochs run by pruned trials", fmt(c.epochs_run_pruned)],
            ["epochs they would have run", fmt(c.epochs_max_pruned)],
            ["compute saved by ASHA (estimate)", (f"{c.cost_saved:.3g} {c.unit} ({c.saved_fraction:.0%} of "
                                                 f"the study without early stopping)")],
            ["trials on the Pareto front", ", ".join(f"`{x}`" for x in c.front) or "–"]]
    if a.reuse is not None:
        rows.append(["pre-training reuse", reuse_text(a.reuse)])
    return Section("Cost", [figure(figures, "cost", "Objective vs compute", c.takeaway(a.study.mode),
                                   "no scored trial logged its compute"), Table(["", "value"], rows)])


def _trials(a: StudyAnalysis) -> Section:
    t = a.trials
    knobs = [i.name for i in a.infos]
    header = ["trial", "status", *[f"`{k}`" for k in knobs], a.study.metric, "epochs", "test/mauc",
              a.cost.unit]
    last = {schema.STATUS_RUNNING: 1, schema.STATUS_FAILED: 2}
    order = t.assign(_group=t["status"].map(lambda s: last.get(s, 0)))
    order = order.sort_values(["_group", "objective"], ascending=[True, a.study.mode == "min"],
                              na_position="last")
    rows = [[str(row["trial_id"]), str(row["status"]), *[fmt(_py(row[k])) for k in knobs],
             fmt(row["objective"]),
             fmt(row["epochs_run"]), fmt(row[schema.M_TEST_MAUC]), _cost_cell(row)]
            for _, row in order.iterrows()]
    note = (f"Best first (by `{a.study.metric}`, best epoch); running, then failed trials last. Pruned "
            "trials enter the analysis with the value ASHA stopped them at (what the Optuna searcher saw); "
            "failed and running trials do not.")
    blocks: list[Block] = [note, Table(header, rows)]
    failed = t[(t["status"] == schema.STATUS_FAILED) & t["error"].notna()]
    if len(failed):
        blocks.append(Bullets([f"`{row['trial_id']}` failed: "
                               f"{error_text(row['error'])}" for _, row in failed.iterrows()]))
    return Section("All trials", blocks)


def _cost_cell(row: pd.Series) -> str:
    """A trial's cost; with its share of a shared pre-training named when it has one."""
    share = row.get("pretrain_share_hours", 0.0)
    if is_missing(share) and not is_missing(row.get("pretrain_key")):
        return f"{fmt(row['cost_hours'])} (share unknown)"
    return fmt(row["cost_hours"]) + (f" (share {fmt(share)})" if not is_missing(share) and share > 0 else "")


def _py(v: Any) -> Any:
    if is_missing(v):
        return None
    return v.item() if hasattr(v, "item") else v
