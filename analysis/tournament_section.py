"""The report's tournament section: the bracket (recipes x rungs, each score with its paired CI, kept or
dropped), the rank agreement between consecutive rungs (Kendall tau over the recipes scored at both) and the
pre-training epochs spent. It reads the bracket the study logged on its parent run
(schema.ARTIFACT_TOURNAMENT, written by study/run/tournament.py); tables first, the figure drawn from them.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from thoraxmae.analysis.analyze import StudyAnalysis
from thoraxmae.analysis.document import Bullets, FigureRef, Section, Table
from thoraxmae.study import schema

log = logging.getLogger(__name__)
FIGURE = "bracket"


@dataclass(frozen=True)
class Agreement:
    rung_a: int
    rung_b: int
    n: int  # recipes scored at both rungs
    tau: float  # Kendall tau of their mean scores (nan below 2 recipes)
    flipped: list[tuple[str, str]]  # pairs ordered one way at rung_a and the other at rung_b


def load_bracket(a: StudyAnalysis) -> dict[str, Any] | None:
    """The study's bracket summary, or None when the study ran no tournament."""
    s = a.study
    if s.parent_run_id is None:
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=s.tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(s.parent_run_id, schema.ARTIFACT_TOURNAMENT, tmp)
            return json.loads(Path(path).read_text())
    except (MlflowException, OSError, ValueError):
        return None


def scored_rungs(bracket: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in bracket["rungs"] if not r.get("unscored")]


def bracket_table(bracket: dict[str, Any]) -> Table:
    """One row per recipe, one column per scored rung: mean score, paired 95% CI of its difference to the
    rung's
    leader, kept or dropped (blank: not scored there)."""
    rungs = scored_rungs(bracket)
    rows = []
    for recipe in bracket["recipes"]:
        cells = [f"`{recipe}`"]
        for rung in rungs:
            s = next((s for s in rung["standings"] if s["recipe"] == recipe), None)
            if s is None:
                cells.append("")
                continue
            ci = ("" if s["rank"] == 1
                  else f" (Δ {s['diff_to_leader']:+.4f}, CI {s['ci_low']:+.4f} to {s['ci_high']:+.4f})")
            verdict = "kept" if s["kept"] else ("dropped, close" if s.get("close") else "dropped")
            cells.append(f"{s['mean']:.4f}{ci}, {verdict}")
        rows.append(cells)
    return Table(["recipe", *[f"rung {r['epochs']} ep" for r in rungs]], rows)


def agreements(bracket: dict[str, Any]) -> list[Agreement]:
    """Kendall tau between the mean scores of consecutive scored rungs, over the recipes scored at both."""
    from scipy.stats import kendalltau

    out = []
    rungs = scored_rungs(bracket)
    for ra, rb in itertools.pairwise(rungs):
        ma = {s["recipe"]: s["mean"] for s in ra["standings"]}
        mb = {s["recipe"]: s["mean"] for s in rb["standings"]}
        both = [r for r in ma if r in mb]
        tau = (float(kendalltau([ma[r] for r in both], [mb[r] for r in both]).statistic) if len(both) >= 2
               else math.nan)
        flipped = [(x, y) for i, x in enumerate(both) for y in both[i + 1:]
                   if (ma[x] - ma[y]) * (mb[x] - mb[y]) < 0]
        out.append(Agreement(ra["epochs"], rb["epochs"], len(both), tau, flipped))
    return out


def agreement_line(g: Agreement) -> str:
    if g.n < 2:
        return (f"Rungs {g.rung_a} → {g.rung_b} epochs: only {g.n} recipe scored at both; "
                "no rank agreement to read.")
    line = f"Rungs {g.rung_a} → {g.rung_b} epochs: Kendall tau = {g.tau:+.2f} over {g.n} recipes."
    if g.flipped:
        pairs = "; ".join(f"`{x}` vs `{y}`" for x, y in g.flipped)
        line += (f" **The ranking flipped** between these rungs for {pairs}: the earlier cut may have "
                 "dropped a recipe that would lead later.")
    else:
        line += " The order held."
    return line


def close_line(bracket: dict[str, Any]) -> str:
    """How many dropped recipes were within noise of the cut (their paired 95% CI against it covers 0)."""
    close = [(r["epochs"], s["recipe"])
             for r in scored_rungs(bracket) for s in r["standings"] if s.get("close")]
    if not close:
        return ("No recipe was dropped within noise of the cut "
                "(every dropped recipe's paired CI against it excludes 0).")
    shown = "; ".join(f"`{recipe}` at {epochs} epochs" for epochs, recipe in close)
    return (f"**{len(close)} cut(s) within noise**: {shown} (paired 95% CI against the last kept recipe "
            "covers 0); more scoring fine-tunes (`search.tournament.scoring.trials`) would sharpen them.")


def epochs_line(bracket: dict[str, Any]) -> str:
    spent, full, one = bracket["pretrain_epochs"], bracket["full_epochs"], bracket["one_epochs"]
    return (f"Pre-training epochs spent: **{spent}**, against {full} for every recipe taken to {one} epochs "
            f"({full / spent:.2f}x more) and {one} for one pre-training ({spent / one:.2f}x one).")


def plot_bracket(bracket: dict[str, Any], path: Path) -> Path:
    """Recipes (rows) x rungs (x): each score's mean with the paired CI of its difference to the leader,
    filled
    when kept, hollow when dropped."""
    rungs = scored_rungs(bracket)
    recipes = bracket["recipes"]
    fig = Figure(figsize=(9, 0.5 * len(recipes) + 2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for x, rung in enumerate(rungs):
        leader = rung["standings"][0]["mean"]
        for s in rung["standings"]:
            y = recipes.index(s["recipe"])
            low, high = leader + s["ci_low"], leader + s["ci_high"]
            xs = x  # one column per rung; the score is printed beside the point
            if math.isfinite(low) and math.isfinite(high) and s["rank"] > 1:
                ax.plot([xs, xs], [y - 0.2, y + 0.2], color="0.6", lw=1)
            ax.scatter([xs], [y], s=80, color="C0" if s["kept"] else "white", edgecolors="C0", zorder=3)
            ax.annotate(f"{s['mean']:.3f}" + ("" if s["rank"] == 1 else f" [{low:.3f}, {high:.3f}]"),
                        (xs, y), textcoords="offset points", xytext=(8, -3), fontsize=7)
    ax.set_yticks(range(len(recipes)), recipes, fontsize=7)
    ax.set_xticks(range(len(rungs)), [f"{r['epochs']} ep" for r in rungs])
    ax.set_xlim(-0.3, len(rungs) - 0.2)
    ax.invert_yaxis()
    ax.set_title("Tournament bracket: mean paired score per rung", fontsize=10)
    ax.set_xlabel("pre-training epochs (filled: kept, hollow: dropped; [ ]: 95% paired CI, leader's score + "
                  "difference)", fontsize=8)
    fig.savefig(path)
    return path


def draw_bracket(a: StudyAnalysis, out: Path) -> dict[str, Path]:
    bracket = load_bracket(a)
    return {FIGURE: plot_bracket(bracket, out / "bracket.png")} if bracket and scored_rungs(bracket) else {}


def tournament_sections(a: StudyAnalysis, figures: dict[str, Path]) -> list[Section]:
    """The tournament section, or none when the study ran no tournament."""
    bracket = load_bracket(a)
    if bracket is None:
        return []
    blocks: list = [f"Winner: **`{bracket['winner']}`**" + (f", encoder `{bracket['encoder']}`; fine-tune it "
                                                            "with "
                                                            f"`{bracket['next']}`."
                                                            if bracket.get("next") else "."),
                    bracket_table(bracket)]
    if FIGURE in figures:
        blocks.append(FigureRef(figures[FIGURE], "Bracket", "Each rung's paired scores; the cut keeps the "
                                                            "filled points."))
    blocks.append(Bullets([agreement_line(g) for g in agreements(bracket)] + [close_line(bracket),
                                                                           epochs_line(bracket)]))
    tie = bracket["rungs"][0].get("tie_rule") if bracket["rungs"] else None
    if tie:
        blocks.append(f"Cut rule: {tie}.")
    return [Section("Recipe tournament", blocks)]
