"""The confirmation's words: the held-out verdict first, what varied, and the table behind it.

Numbers come from analysis/confirm.py; this module only words them. The verdict is the recommended recipe
(best val mean over the confirmation's fresh seeds) judged against the reference on the held-out test split,
paired by replicate, with its Holm-adjusted p across the compared recipes. The wording names what a
replicate varied: fine-tuning seeds, and pre-training seeds when the runs have several; with one
pre-training per recipe it says that the interval does not cover pre-training variance.
"""
from __future__ import annotations

import math

from thoraxmae.analysis.confirm import ALPHA, BETTER, SAME, WORSE, Confirmation, RecipeRuns
from thoraxmae.analysis.document import Block, Bullets, Table
from thoraxmae.analysis.tables import fmt
from thoraxmae.study import schema


def varied_text(c: Confirmation) -> str:
    """What the replicates varied: `3 fine-tuning seeds, one pre-training per recipe`, `3 fine-tuning seeds x
    2 pre-training seeds per recipe`, or `3 fine-tuning seeds (one fixed encoder)`."""
    seeds = sorted({len(r.seeds) for r in c.recipes}) or [0]
    n = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    text = f"{n} fine-tuning seed{'s' if seeds[-1] != 1 else ''}"
    if c.stage != "pipeline":
        return f"{text} per recipe (one fixed encoder)"
    pretrain = max((len(r.pretrain_seeds) for r in c.recipes), default=0)
    return f"{text} x {pretrain} pre-training seeds per recipe" if pretrain > 1 else \
        f"{text}, one pre-training per recipe"


def _diff_ci(p) -> str:
    if p is None or not math.isfinite(p.mean):
        return "–"
    return f"{p.mean:+.4f}" + (f" ({p.ci[0]:+.4f} to {p.ci[1]:+.4f})" if math.isfinite(p.ci[0]) else "")


def verdict_text(r: RecipeRuns, c: Confirmation) -> str:
    """One recipe's verdict against the reference on the verdict split (test when logged)."""
    p, metric = r.paired, f"`{c.verdict_metric}`"
    if r.label == schema.RECIPE_REFERENCE:
        return "the reference"
    if r.same_as_reference:
        return "is the reference recipe (the same knob values): not a separate comparison"
    if p is None:
        return "not compared: no completed run of the reference recipe"
    if p.n == 0:
        return f"not compared: no replicate with {metric} in common with the reference recipe"
    if p.n < 2:
        return (f"not compared: only {p.n} replicate in common with the reference recipe (difference "
                f"{p.mean:+.4f} on {metric}); an interval needs 2")
    k = len(c.compared)
    stats = (f"95% CI {p.ci[0]:+.4f} to {p.ci[1]:+.4f}, paired p {p.p:.3g}, Holm-adjusted p {p.p_holm:.3g} "
             f"across {k} recipe{'s' if k != 1 else ''}")
    if p.verdict in (BETTER, WORSE):
        return f"{p.verdict} than the reference recipe on {metric} by {p.mean:+.4f} ({stats})"
    if p.verdict == SAME:
        return (f"not distinguishable from the reference recipe on {metric} (difference {p.mean:+.4f}, "
                f"{stats})")
    return f"not compared on {metric} (difference {p.mean:+.4f})"


def verdict_lines(c: Confirmation) -> list[str]:
    """The bottom line, verdict first: the recommended recipe against the reference on the held-out split,
    then the other compared recipes, what varied, and the caveats of the design."""
    varied = varied_text(c)
    split = "held-out " if c.held_out else ""
    best = c.best
    if best is None:
        return ["**Verdict: none** — no confirmation run is usable."]
    if best.label == schema.RECIPE_REFERENCE or best.same_as_reference:
        beaten = [r for r in c.compared if r.paired.verdict == BETTER]
        lines = [f"**Verdict: the reference recipe stands.** It has the best mean `{c.metric}` over "
                 f"{varied}, so it is the recommended recipe"
                 + ("." if not beaten else f"; yet on {split}`{c.verdict_metric}` "
                    + ", ".join(f"`{r.label}`" for r in beaten) + " scores better (see below).")]
        others = c.candidates
    else:
        lines = [(f"**Verdict: the recommended recipe `{best.label}` is {verdict_text(best, c)}.** It has "
                  f"the best mean `{c.metric}` over {varied}; {split}`{c.verdict_metric}` only judges it.")]
        others = [r for r in c.candidates if r is not best]
    lines += [f"`{r.label}` ({r.n} runs): {verdict_text(r, c)}." for r in others]
    lines.append(_design_note(c, varied))
    return lines


def _design_note(c: Confirmation, varied: str) -> str:
    text = (f"What varied: {varied}; every recipe ran the same replicates, so differences are paired. A "
            f"recipe is better or worse only when its Holm-adjusted p (across the {len(c.compared)} compared "
            f"recipes) is below {ALPHA:g}.")
    if c.stage == "pipeline" and max((len(r.pretrain_seeds) for r in c.recipes), default=0) <= 1:
        text += (" The intervals cover fine-tuning variance only: each recipe was pre-trained once, so a "
                 "lucky pre-training keeps its edge in every seed (the verdict holds given these "
                 "pre-trainings).")
    if not c.held_out:
        text += f" No test split was logged: `{c.verdict_metric}` is the split the recipes were chosen on."
    return text


def noise_text(c: Confirmation) -> str:
    if not math.isfinite(c.noise_sd):
        return ("Seed-to-seed spread (the noise floor): not measured; it needs a recipe with 2 completed "
                "seeds.")
    sized = sum(r.n > 1 for r in c.recipes)
    text = (f"Seed-to-seed spread (the study's noise floor): SD {c.noise_sd:.4f} of `{c.metric}` over seeds, "
            f"pooled across {sized} recipe(s) ({c.noise_dof} degrees of freedom).")
    parts = variance_parts(c.recipes)
    if parts is not None:
        pretrain_sd, finetune_sd = parts
        text += (f" Of it, SD {pretrain_sd:.4f} comes from the pre-training seed and SD {finetune_sd:.4f} "
                 "from the fine-tuning seed (one-way random-effects estimate, pooled over the recipes).")
    return text


def variance_parts(recipes: list[RecipeRuns]) -> tuple[float, float] | None:
    """(pre-training SD, fine-tuning SD) of the val metric, from the recipes whose runs have at least 2
    pre-training seeds with at least 2 fine-tuning seeds each; None when no recipe has them.

    Within a recipe, the fine-tuning variance is the pooled variance of scores that share a pre-training
    seed; the pre-training variance is the variance of the pre-training seeds' means less the fine-tuning
    variance over the fine-tuning seeds per mean (clipped at 0: a one-way random-effects estimate).
    Both are pooled over recipes, weighted by their degrees of freedom."""
    within_ss = within_dof = between = between_dof = 0.0
    for r in recipes:
        groups: dict[int | None, list[float]] = {}
        for (pretrain, _), score in r.scores.items():
            if pretrain is not None and math.isfinite(score):
                groups.setdefault(pretrain, []).append(score)
        groups = {k: v for k, v in groups.items() if len(v) >= 2}
        if len(groups) < 2:
            continue
        means = [sum(v) / len(v) for v in groups.values()]
        ss = sum(sum((x - m) ** 2 for x in v) for v, m in zip(groups.values(), means, strict=True))
        dof = sum(len(v) - 1 for v in groups.values())
        per_mean = sum(len(v) for v in groups.values()) / len(groups)  # fine-tuning seeds per pre-training
        grand = sum(means) / len(means)
        var_means = sum((m - grand) ** 2 for m in means) / (len(means) - 1)
        within_ss, within_dof = within_ss + ss, within_dof + dof
        between += (len(means) - 1) * max(0.0, var_means - (ss / dof) / per_mean)
        between_dof += len(means) - 1
    if not within_dof or not between_dof:
        return None
    return math.sqrt(between / between_dof), math.sqrt(within_ss / within_dof)


def _replicates(r: RecipeRuns) -> str:
    if r.pretrain_seeds and len(r.pretrain_seeds) > 1:
        return f"{len(r.seeds)} x {len(r.pretrain_seeds)} pre-training"
    return ", ".join(str(s) for s in r.seeds)


def confirmation_blocks(c: Confirmation, knobs: list[str]) -> list[Block]:
    intro = (f"**This recipe rests on {c.n_runs} confirmation runs**: the chosen search recipes and the "
             f"reference recipe re-run with fresh seeds ({varied_text(c)}), the same replicates for every "
             f"recipe. The recommended recipe is the best mean `{c.metric}` (each run at its best epoch); "
             f"the verdict compares each recipe with the reference on `{c.verdict_metric}`"
             + (" (held out: read once per run, with the weights selected on "
                "validation)" if c.held_out else "")
             + ", replicate by replicate: the mean difference with a t-based 95% CI (not adjusted), and the "
               "paired t-test's p, Holm-adjusted across the compared recipes. Val is shown beside, as the "
               "split the recipes were chosen on.")
    blocks: list[Block] = [intro]
    if not c.recipes:
        blocks.append("**No confirmation run is usable**, so nothing is confirmed: see below.")
    else:
        rows = []
        for r in c.recipes:
            test = "–" if not r.test else f"{r.test_mean:.4f}" + (
                f" ({r.test_ci[0]:.4f}–{r.test_ci[1]:.4f})" if math.isfinite(r.test_ci[0]) else "")
            val = f"{r.mean:.4f}" + (f" ({r.ci[0]:.4f}–{r.ci[1]:.4f})" if math.isfinite(r.ci[0])
                                     else " (one seed)")
            holm = "–" if r.paired is None or not math.isfinite(r.paired.p_holm) else f"{r.paired.p_holm:.3g}"
            label = f"`{r.label}`" + (" (recommended)" if r.label == c.recommended else "")
            if r.label == schema.RECIPE_REFERENCE and r.trial_id is not None:
                label += f" = trial `{r.trial_id}`"
            rows.append([label, _replicates(r), test, _diff_ci(r.paired) if c.held_out else "–", holm,
                         verdict_text(r, c), val, _diff_ci(r.paired_val), fmt(r.search_score)])
        test = c.verdict_metric if c.held_out else (c.test_metric or "test")
        blocks.append(Table(["recipe", "seeds", f"mean `{test}` (95% CI)", "difference to reference (95% CI)",
                             "Holm-adjusted p", "verdict", f"mean `{c.metric}` (95% CI)",
                             f"`{c.metric}` difference (95% CI)", "search score"], rows))
        blocks.append(Bullets([*verdict_lines(c), noise_text(c)]))
        shown = [k for k in knobs if any(k in r.params for r in c.recipes)]
        if shown:
            blocks.append(Table(["recipe", *[f"`{k}`" for k in shown]],
                                [[f"`{r.label}`", *[fmt(r.params.get(k)) for k in shown]]
                                 for r in c.recipes]))
    if c.notes:
        blocks.append(Bullets([f"Not used or not computed: {n}." for n in c.notes]))
    return blocks
