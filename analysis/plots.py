"""Draw the report's figures from the computed tables (analysis/analyze.py); no numbers are made here.

Each function writes one PNG and returns its path. Figures are built with matplotlib's object API
(`matplotlib.figure.Figure`, Agg canvas), so no global pyplot state or display is involved.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from thoraxmae.analysis.analyze import StudyAnalysis
from thoraxmae.study import schema

STATUS_COLOURS = {schema.STATUS_COMPLETED: "#1f77b4", schema.STATUS_PRUNED: "#ff7f0e",
                  schema.STATUS_FAILED: "#d62728", schema.STATUS_RUNNING: "#7f7f7f"}
TOP_COLOURS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
               "#393b79", "#637939")  # tab10 without the orange and grey that mark pruned and running trials
DPI = 100


def metric_label(metric: str) -> str:
    """The objective's axis label with its unit."""
    if "mauc" in metric:
        return f"{metric} (mean ROC AUC)"
    if "acc" in metric:
        return f"{metric} (accuracy, fraction)"
    if "loss" in metric:
        return f"{metric} (loss)"
    return metric


def knob_label(knob: str) -> str:
    """The knob with its unit and range, from the typed configs (study.schema.knob_label)."""
    return schema.knob_label(knob)


def draw_all(a: StudyAnalysis, out: Path) -> dict[str, Path]:
    """Every figure the analysis has data for, keyed by name (importance and interaction need a ranking;
    effects, parallel coordinates and cost a scored trial); the sections say why one is missing."""
    figures = {"history": plot_history(a, out / "history.png")}
    if any(e.bins for e in a.effects):
        figures["effects"] = plot_effects(a, out / "effects.png")
    if not a.scored.empty:
        figures["parallel"] = plot_parallel(a, out / "parallel.png")
    if not a.curves.empty:
        figures["curves"] = plot_curves(a, out / "curves.png")
    if not a.cost.points.empty:
        figures["cost"] = plot_cost(a, out / "cost.png")
    if a.importance.ranked:
        figures["importance"] = plot_importance(a, out / "importance.png")
    if a.interaction is not None:
        figures["interaction"] = plot_interaction(a, out / "interaction.png")
    return figures


def plot_importance(a: StudyAnalysis, path: Path) -> Path:
    rows = a.importance.rows[::-1]  # most important on top
    fig = Figure(figsize=(9, 0.6 * len(rows) + 1.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    fan = np.array([r.fanova for r in rows])
    err = np.nan_to_num(np.array([[r.fanova - r.fanova_low for r in rows],
                                  # 0: stability not checked
                                  [r.fanova_high - r.fanova for r in rows]])).clip(0)
    ax.barh(y + 0.18, fan, height=0.36, xerr=err, capsize=3, color="#1f77b4",
            label="fANOVA (95% bootstrap range)")
    ped = np.array([r.ped_anova for r in rows], dtype=float)
    ped_label = "PED-ANOVA" if np.isfinite(ped).any() else "PED-ANOVA (not computed)"
    ax.barh(y - 0.18, np.nan_to_num(ped), height=0.36, color="#9ecae1", label=ped_label)
    ax.set_yticks(y, [r.knob for r in rows])
    ax.set_xlabel("importance (normalised to sum to 1; fANOVA: share of the objective's variance)")
    ax.set_xlim(0, 1)
    ax.set_title(f"Hyperparameter importance for {a.study.metric} ({a.importance.n_trials} trials)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_effects(a: StudyAnalysis, path: Path) -> Path:
    effects = a.effects
    cols = grid_columns(len(effects))
    nrows = max(1, -(-len(effects) // cols))
    fig = Figure(figsize=(4.2 * cols + 0.8, 3.5 * nrows + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, e in zip(axes.flat, effects, strict=False):  # the grid may hold more axes than effects
        x = np.array([b.center for b in e.bins], dtype=float)
        mean = np.array([b.mean for b in e.bins])
        lo = np.nan_to_num(mean - np.array([b.ci_low for b in e.bins]))
        hi = np.nan_to_num(np.array([b.ci_high for b in e.bins]) - mean)
        ax.errorbar(x, mean, yerr=[lo.clip(0), hi.clip(0)], fmt="o", capsize=3, color="#1f77b4",
                    label="bin mean, 95% CI")
        if e.pd_x is not None:
            ax.plot(e.pd_x, e.pd_y, "--", color="#ff7f0e", label="forest partial dependence")
        if not e.info.numeric:
            ax.set_xticks(x, [b.label for b in e.bins])
        if e.info.log:
            ax.set_xscale("log")
        ax.set_xlabel(knob_label(e.knob), fontsize=9)
        ax.set_ylabel(metric_label(a.study.metric), fontsize=9)
        ax.set_title(e.knob, fontsize=10)
    for ax in list(axes.flat)[len(effects):]:
        ax.set_visible(False)
    if effects:  # one legend for all panels, outside them (it would hide points inside one)
        fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("Marginal effect of each knob (scored trials binned by value)")
    return _save(fig, path)


def grid_columns(n: int) -> int:
    """Panels per row: 4 as 2x2, otherwise up to 3 a row (fewest empty panels)."""
    return max(1, n) if n <= 3 else 2 if n == 4 else 3


def plot_interaction(a: StudyAnalysis, path: Path) -> Path:
    it = a.interaction
    fig = Figure(figsize=(7.5, 6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(it.z, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(np.arange(len(it.x_labels)), it.x_labels, rotation=45, fontsize=8)
    ax.set_yticks(np.arange(len(it.y_labels)), it.y_labels, fontsize=8)
    row, col = np.unravel_index(int(np.argmax(it.z) if a.study.mode == "max" else np.argmin(it.z)),
                                it.z.shape)
    ax.plot(col, row, marker="*", markersize=16, color="white", markeredgecolor="black")
    ax.set_xlabel(knob_label(it.x_knob))
    ax.set_ylabel(knob_label(it.y_knob))
    ax.set_title("Interaction of the top-2 knobs (forest partial dependence, ★ = best cell)")
    fig.colorbar(im, ax=ax, label=metric_label(a.study.metric))
    return _save(fig, path)


def plot_history(a: StudyAnalysis, path: Path) -> Path:
    t = a.trials.reset_index(drop=True)
    fig = Figure(figsize=(9, 4.2), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for status in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED, schema.STATUS_RUNNING):
        sel = t[(t["status"] == status) & t["objective"].notna()]
        if sel.empty:
            continue
        ax.scatter(sel.index + 1, sel["objective"], s=28, color=STATUS_COLOURS[status], label=status,
                   marker="o" if status != schema.STATUS_RUNNING else "^")
    for i in t.index[t["status"] == schema.STATUS_FAILED]:
        ax.axvline(i + 1, color=STATUS_COLOURS[schema.STATUS_FAILED], alpha=0.4, lw=1)
    scored = t["status"].isin((schema.STATUS_COMPLETED, schema.STATUS_PRUNED))
    values = t["objective"].where(scored)
    best = (values.cummax() if a.study.mode == "max" else values.cummin()).ffill()
    ax.step(t.index + 1, best, where="post", color="black", lw=1.2, label="best so far")
    if (t["status"] == schema.STATUS_FAILED).any():
        ax.plot([], [], color=STATUS_COLOURS[schema.STATUS_FAILED], alpha=0.4, label="failed (no value)")
    ax.set_xlabel("trial (in start order)")
    ax.set_ylabel(metric_label(a.study.metric))
    ax.set_title("Optimisation history")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_parallel(a: StudyAnalysis, path: Path) -> Path:
    scored, infos = a.scored, a.infos
    fig = Figure(figsize=(10, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    cols = [_normalise(scored[i.name], i) for i in infos] + [_normalise(scored["objective"], None)]
    data = np.stack(cols, axis=1) if cols else np.zeros((len(scored), 1))  # [N, K+1] in 0..1
    y = scored["objective"].to_numpy(dtype=float)
    span = (y.max() - y.min()) or max(abs(y.max()) * 0.01, 1e-6)
    cmap = matplotlib.colormaps["viridis"]
    top = set(a.recipe.top["trial_id"]) if a.recipe is not None else set()
    order = np.argsort(y if a.study.mode == "max" else -y)  # best drawn last
    for n in order:
        is_top = scored["trial_id"].iloc[n] in top
        ax.plot(np.arange(data.shape[1]), data[n], color=cmap((y[n] - y.min()) / span),
                lw=2.2 if is_top else 0.8,
                alpha=1.0 if is_top else 0.5)
    sm = ScalarMappable(norm=Normalize(y.min(), y.min() + span), cmap=cmap)
    fig.colorbar(sm, ax=ax, label=metric_label(a.study.metric), pad=0.01)
    labels = [f"{i.name}\n{_range_text(scored[i.name], i)}" for i in infos]
    labels.append(f"{a.study.metric}\n{y.min():.3f}-{y.max():.3f}")
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_ylabel("position within the observed range (0 = min, 1 = max)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"Parallel coordinates: scored trials, colour = {a.study.metric}, thick = top-{len(top)}")
    return _save(fig, path)


def plot_curves(a: StudyAnalysis, path: Path) -> Path:
    curves = a.curves
    top = list(a.recipe.top["trial_id"]) if a.recipe is not None else []
    fig = Figure(figsize=(9, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for _, c in curves.groupby("trial_id", sort=False):
        status = c["status"].iloc[0]
        if status == schema.STATUS_PRUNED:
            ax.plot(c["epoch"], c["value"], "--", color=STATUS_COLOURS[status], alpha=0.45, lw=0.9)
            ax.plot(c["epoch"].iloc[-1], c["value"].iloc[-1], "x", color=STATUS_COLOURS[status], alpha=0.8)
        elif status == schema.STATUS_RUNNING:
            ax.plot(c["epoch"], c["value"], ":", color=STATUS_COLOURS[status], lw=1.2)
    for rank, tid in enumerate(top):
        c = curves[curves["trial_id"] == tid]
        ax.plot(c["epoch"], c["value"], "-o", ms=3, lw=1.8, color=TOP_COLOURS[rank % len(TOP_COLOURS)],
                label=f"#{rank + 1} {tid}")
    if (curves["status"] == schema.STATUS_PRUNED).any():
        ax.plot([], [], "--x", color=STATUS_COLOURS[schema.STATUS_PRUNED], label="pruned by ASHA (x = stop)")
    if (curves["status"] == schema.STATUS_RUNNING).any():
        ax.plot([], [], ":", color=STATUS_COLOURS[schema.STATUS_RUNNING], label="still running")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_label(a.study.metric))
    ax.set_title(f"Learning curves: top-{len(top)} trials and pruned trials")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return _save(fig, path)


def plot_cost(a: StudyAnalysis, path: Path) -> Path:
    p = a.cost.points
    fig = Figure(figsize=(9, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for status in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED):
        sel = p[p["status"] == status]
        if sel.empty:
            continue
        ax.scatter(sel["cost_hours"], sel["objective"], s=28, color=STATUS_COLOURS[status], label=status)
    front = p[p["on_front"]]
    ax.step(front["cost_hours"], front["objective"], where="post", color="black", lw=1.2,
            label="Pareto front")
    ax.scatter(front["cost_hours"], front["objective"], s=70, facecolors="none", edgecolors="black")
    ax.set_xlabel(f"compute per trial ({a.cost.unit})")
    ax.set_ylabel(metric_label(a.study.metric))
    ax.set_title("Objective vs compute")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _normalise(col: pd.Series, info) -> np.ndarray:
    if info is not None and not info.numeric:
        index = {c: i for i, c in enumerate(info.choices)}
        x = np.array([index.get(v, np.nan) for v in col.tolist()], dtype=float)
    else:
        x = col.to_numpy(dtype=float, na_value=np.nan)
        if info is not None and info.log:
            x = np.log10(x)
    lo, hi = np.nanmin(x), np.nanmax(x)
    return (x - lo) / (hi - lo) if hi > lo else np.full_like(x, 0.5)


def _range_text(col: pd.Series, info) -> str:
    if not info.numeric:
        return "/".join(str(c) for c in info.choices)
    x = col.to_numpy(dtype=float, na_value=np.nan)
    return f"{np.nanmin(x):.3g}-{np.nanmax(x):.3g}"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path
