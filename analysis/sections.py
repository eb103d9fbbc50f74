"""The report's content as a small document model (sections of paragraphs, tables, figures, code),
assembled from the computed analysis; analysis/render.py writes it as HTML or Markdown.

Inline text may use `code` spans and **bold**; both renderers understand them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thoraxmae.analysis.analyze import StudyAnalysis
from thoraxmae.analysis.tables import is_missing
from thoraxmae.study import schema

MINOR_IMPORTANCE = 0.05  # below this share of variance a knob "hardly matters"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class FigureRef:
    path: Path
    title: str
    takeaway: str


@dataclass
class Code:
    text: str


@dataclass
class Bullets:
    items: list[str]


Block = str | Table | FigureRef | Code | Bullets


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def build_sections(a: StudyAnalysis, figures: dict[str, Path], recipe_text: str) -> list[Section]:
    return [_summary(a), _recipe(a, recipe_text), _importance(a, figures), _effects(a, figures),
            _search(a, figures), _cost(a, figures), _reference(a), _trials(a)]


def fmt(v: Any) -> str:
    """A value for a table cell: floats to 4 significant digits, missing as an en dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    return f"{float(v):.4g}"


def _summary(a: StudyAnalysis) -> Section:
    s, r, imp = a.study, a.recipe, a.importance
    counts = ", ".join(f"{n} {k}" for k, n in a.status_counts.items())
    blocks: list[Block] = [
        (f"Study **{s.name}** (stage `{s.stage}`), {len(a.trials)} trials: {counts}. Objective `{s.metric}` "
        f"({s.mode}imised), read from MLflow at `{s.tracking_uri}`.")]
    items = [f"Best trial `{r.best.trial_id}`: {s.metric} = {r.best.objective:.4f}"
             + (f", test/mauc {r.best.test:.4f} (95% CI {r.best.test_ci[0]:.4f}–{r.best.test_ci[1]:.4f})"
                if math.isfinite(r.best.test) else "") + "."]
    if imp.ranked:
        top = imp.rows[0]
        first = imp.statements[0]
        caveat = "" if first.stable else (f"; but not told apart from `{first.lower}`: the order holds in only "
                                          f"{first.support:.0%} of the resamples")
        items.append(f"Most important knob: `{top.knob}` ({top.fanova:.0%} of the variance by fANOVA; first in "
                     f"{top.p_first:.0%} of {imp.n_bootstrap} bootstrap resamples{caveat}).")
    else:
        items.append(f"Importance: **cannot rank importance** ({imp.reason}).")
    items.append("Recipe: " + ", ".join(f"`{k.knob}` = {fmt(k.value)}" for k in r.knobs) + ".")
    items.append(r.confidence.statements[-1])
    blocks.append(Bullets(items))
    return Section("Summary", blocks)


def _recipe(a: StudyAnalysis, recipe_text: str) -> Section:
    r, imp = a.recipe, a.importance
    share = {row.knob: row.fanova for row in imp.rows}
    rows = []
    for k in r.knobs:
        spread = k.spread(r.confidence.k)
        iqr = f"{fmt(k.iqr[0])} – {fmt(k.iqr[1])}" if k.iqr else "–"
        weight = share.get(k.knob)
        note = "" if weight is None else f"{weight:.0%}" + (" (hardly matters)" if weight < MINOR_IMPORTANCE else "")
        rows.append([f"`{k.knob}`", fmt(k.value), spread, iqr, fmt(k.best_value), note or "–"])
    table = Table(["knob", "recommended", f"top-{r.confidence.k} range", "top-k IQR", (f"best trial "
                   f"({r.best.trial_id})"), "importance (fANOVA)"], rows)
    return Section("Recipe", [
        (f"Recommended value per knob: the median of the top-{r.confidence.k} trials (most common choice for "
        f"categorical knobs), with their spread. Values of knobs that hardly matter are free choices."),
        table, Bullets(r.confidence.statements), _best_config(a),
        ("Ready-to-run spec for the final training run (`recipe.yaml`: the study's spec with the searched knobs "
        "fixed and the search section removed):"), Code(recipe_text)])


def _best_config(a: StudyAnalysis) -> str:
    b = a.recipe.best
    exact = ", ".join(f"`{k}` = {v!r}" for k, v in b.params.items())
    return (f"Best trial's exact configuration (`{b.trial_id}`, {b.status}, MLflow run `{b.run_id}`; its other "
            f"settings are the spec's): {exact}.")


def _importance(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    imp = a.importance
    if not imp.ranked:
        return Section("Hyperparameter importance", [f"**Importance cannot be ranked**: {imp.reason}."])
    top = imp.rows[0]
    ped = [x for x in imp.rows if math.isfinite(x.ped_anova)]
    ped_text = f"PED-ANOVA ranks `{max(ped, key=lambda x: x.ped_anova).knob}` first" if ped \
        else "PED-ANOVA could not be computed"
    take = f"`{top.knob}` explains {top.fanova:.0%} of the objective's variance (fANOVA); {ped_text}."
    rows = [[f"`{x.knob}`", f"{x.fanova:.3f}", f"{x.fanova_low:.3f} – {x.fanova_high:.3f}",
             f"{x.ped_anova:.3f}" if math.isfinite(x.ped_anova) else "–", f"{x.p_first:.0%}"] for x in imp.rows]
    blocks: list[Block] = [
        FigureRef(figures["importance"], "Hyperparameter importance", take),
        Table(["knob", "fANOVA", "95% bootstrap range", "PED-ANOVA", "ranked first"], rows),
        (f"Rank stability: {imp.n_bootstrap} bootstrap resamples of the {imp.n_trials} scored trials; an order is "
        f"stated only when it holds in at least {imp.threshold:.0%} of them."),
        Bullets([st.text(imp.threshold) for st in imp.statements])]
    if imp.constant:
        blocks.append("Not varied (one value in every trial): " + ", ".join(f"`{k}`" for k in imp.constant) + ".")
    return Section("Hyperparameter importance", blocks)


def _effects(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    mode = a.study.mode
    intro = ("Dots: mean objective of the scored trials in each bin of the knob, with a bootstrap 95% CI. Raw bins "
             "can be confounded when the sampler moved several knobs together; the dashed line (a random forest's "
             "partial dependence) averages the other knobs out.")
    blocks: list[Block] = [intro, FigureRef(figures["effects"], "Marginal effects", effects_takeaway(a)),
                           Bullets([e.takeaway(mode) for e in a.effects])]
    it = a.interaction
    if it is not None and "interaction" in figures:
        take = (f"Best region: `{it.x_knob}` ≈ {fmt(it.best_x)} with `{it.y_knob}` ≈ {fmt(it.best_y)} "
                f"(partial dependence {it.best_value:.4f}).")
        blocks.append(FigureRef(figures["interaction"], "Interaction of the top-2 knobs", take))
    else:
        blocks.append("No interaction plot: it needs a ranked importance (two knobs, enough trials).")
    return Section("Marginal effects and interaction", blocks)


def effects_takeaway(a: StudyAnalysis) -> str:
    """One line for the marginal-effects figure: which knobs show a clear effect, and where."""
    mode = a.study.mode
    groups: dict[str, list[str]] = {}
    for e in a.effects:
        name = f"`{e.knob}` (best around {e.best.label})" if e.verdict(mode) == "clear" else f"`{e.knob}`"
        groups.setdefault(e.verdict(mode), []).append(name)
    parts = [f"{label}: {', '.join(groups[kind])}" for kind, label in (
        ("clear", "Clear effect"), ("unclear", "no clear effect"), ("confounded", "differences due to other knobs"),
        ("few", "too few values")) if kind in groups]
    return ("; ".join(parts) + ".") if parts else "No knobs to show."


def _search(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    t, mode = a.trials, a.study.mode
    scored = t[t["status"].isin((schema.STATUS_COMPLETED, schema.STATUS_PRUNED))]
    values = scored["objective"]
    best_pos = int(values.idxmax() if mode == "max" else values.idxmin())
    later = len(t) - best_pos - 1
    hist = (f"The best value ({values.loc[best_pos]:.4f}) came at trial {best_pos + 1} of {len(t)}; "
            f"{later} trials ran after it" + (" without improving on it." if later else "."))
    top = a.recipe.knobs[0] if a.recipe.knobs else None
    par = (f"The top-{a.recipe.confidence.k} trials (thick lines) keep `{top.knob}` within {fmt(top.low)}–"
           f"{fmt(top.high)}." if top is not None and top.kind != "categorical" else "Top trials drawn thick.")
    pruned = a.curves[a.curves["status"] == schema.STATUS_PRUNED].groupby("trial_id")["epoch"].max()
    stops = f"{len(pruned)} pruned trials stopped at epoch {int(pruned.min())}–{int(pruned.max())}" if len(pruned) \
        else "no trial was pruned"
    top_final = a.recipe.top["objective_final"]
    curves = f"The top trials end at {top_final.min():.4f}–{top_final.max():.4f}; {stops}."
    return Section("The search", [FigureRef(figures["history"], "Optimisation history", hist),
                                  FigureRef(figures["parallel"], "Parallel coordinates", par),
                                  FigureRef(figures["curves"], "Learning curves", curves)])


def _cost(a: StudyAnalysis, figures: dict[str, Path]) -> Section:
    c = a.cost
    rows = [["compute spent (all trials)", f"{c.total:.3g} {c.unit}"],
            ["pruned trials", str(c.n_pruned)],
            ["epochs run by pruned trials", fmt(c.epochs_run_pruned)],
            ["epochs they would have run", fmt(c.epochs_max_pruned)],
            ["compute saved by ASHA (estimate)", (f"{c.cost_saved:.3g} {c.unit} ({c.saved_fraction:.0%} of "
                                                 f"the study without early stopping)")],
            ["trials on the Pareto front", ", ".join(f"`{x}`" for x in c.front) or "–"]]
    return Section("Cost", [FigureRef(figures["cost"], "Objective vs compute", c.takeaway(a.study.mode)),
                            Table(["", "value"], rows)])


def _reference(a: StudyAnalysis) -> Section:
    share = {row.knob: row.fanova for row in a.importance.rows}
    rows = []
    for r in a.reference:
        weight = share.get(r.knob)
        verdict = r.verdict
        if r.agrees is False and weight is not None and weight < MINOR_IMPORTANCE:
            verdict += f" — but this knob hardly matters here ({weight:.0%} of the variance)"
        agree = "–" if r.agrees is None else ("yes" if r.agrees else "**no**")
        diff = "–" if math.isnan(r.diff) else f"{r.diff:+.3g} ({r.rel_diff:+.0%})" if math.isfinite(r.rel_diff) \
            else f"{r.diff:+.3g}"
        rows.append([f"`{r.knob}`", fmt(r.reference), fmt(r.recommended), agree, diff, verdict])
    return Section(f"Comparison with the reference recipe: {a.options.reference_name}", [
        "A knob agrees when the reference value lies inside the top-k range (categoricals: the same choice).",
        Table(["knob", "reference", "recommended", "agrees", "difference", "verdict"], rows)])


def _trials(a: StudyAnalysis) -> Section:
    t = a.trials
    knobs = [i.name for i in a.infos]
    header = ["trial", "status", *[f"`{k}`" for k in knobs], a.study.metric, "epochs", "test/mauc", a.cost.unit]
    last = {schema.STATUS_RUNNING: 1, schema.STATUS_FAILED: 2}
    order = t.assign(_group=t["status"].map(lambda s: last.get(s, 0)))
    order = order.sort_values(["_group", "objective"], ascending=[True, a.study.mode == "min"], na_position="last")
    rows = [[str(row["trial_id"]), str(row["status"]), *[fmt(_py(row[k])) for k in knobs], fmt(row["objective"]),
             fmt(row["epochs_run"]), fmt(row[schema.M_TEST_MAUC]), fmt(row["cost_hours"])]
            for _, row in order.iterrows()]
    note = (f"Best first (by `{a.study.metric}`, best epoch); running, then failed trials last. Pruned trials enter the "
            f"analysis with the value ASHA stopped them at (what the Optuna searcher saw); failed and running "
            f"trials do not.")
    return Section("All trials", [note, Table(header, rows)])


def _py(v: Any) -> Any:
    if is_missing(v):
        return None
    return v.item() if hasattr(v, "item") else v
