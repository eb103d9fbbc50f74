"""The report's claims, each stated only as far as the numbers carry it.

The recipe is labelled exploratory unless confirmation runs re-ran it with fresh seeds; with them,
each confirmed recipe gets a verdict from its seed-paired difference to the reference recipe. The
importance ranking and its "A matters more than B" orders are checked against the seed noise floor
when one was measured, and labelled exploratory otherwise. Nothing here computes a number: the
numbers come from analysis/analyze.py, this module words them.
"""
from __future__ import annotations

import math

from thoraxmae.analysis.analyze import StudyAnalysis
from thoraxmae.analysis.confirm import NOISE_FACTOR
from thoraxmae.analysis.confirm_section import confirmation_blocks, noise_text, verdict_lines
from thoraxmae.analysis.document import Block, Bullets, Code, Section, Table, figure
from thoraxmae.analysis.importance import OrderStatement
from thoraxmae.analysis.pretrain_section import summary_items
from thoraxmae.analysis.recipe import Confidence, KnobRecipe
from thoraxmae.analysis.tables import error_text, fmt, is_missing
from thoraxmae.study import schema

MINOR_IMPORTANCE = 0.05  # below this share of variance a knob "hardly matters"
EXPLORATORY = ("**Exploratory recipe: there are no confirmation runs.** It is distilled from the search "
               "trials alone: each ran once, with one seed, and the top trials were picked by the very "
               "scores shown here, so those scores overstate what the recipe will score when re-run, and the "
               "seed-to-seed noise is unknown. Re-run the top recipes and the reference recipe with fresh "
               "seeds (confirmation runs) before calling it better than the reference.")


def spread_text(k: KnobRecipe, top_k: int) -> str:
    """The top-k spread of a knob: `low – high` for a number, the recommended choice's share otherwise."""
    return f"{fmt(k.low)} – {fmt(k.high)}" if k.kind != "categorical" else f"{k.share:.0%} of top-{top_k}"


def unscored_reason(a: StudyAnalysis) -> str:
    """Why no trial is scored: the status counts and the first failed trial's error."""
    counts = ", ".join(f"{n} {s}" for s, n in a.status_counts.items() if n)
    text = (f"none of the {len(a.trials)} trials has a `{a.study.metric}` value from a completed or pruned "
            f"run ({counts})")
    failed = a.trials[(a.trials["status"] == schema.STATUS_FAILED) & a.trials["error"].notna()]
    if len(failed):
        text += f"; first error (trial `{failed.iloc[0]['trial_id']}`): {error_text(failed.iloc[0]['error'])}"
    return text


def summary_lines(a: StudyAnalysis) -> list[str]:
    """Plain lines for a terminal: one per knob (recommended value, top-k spread), the best pre-training
    recipe and what reuse saved (when the study compares recipes), then the headline."""
    lines = []
    if a.recipe is not None:
        k = a.recipe.confidence.k
        lines = [f"{r.knob:<28} {fmt(r.value):>8}   top-{k}: {spread_text(r, k)}" for r in a.recipe.knobs]
    return [*lines, *(f"- {line.replace('**', '')}" for line in [*summary_items(a), *headline(a)])]


def headline(a: StudyAnalysis) -> list[str]:
    """The recipe's bottom line for the summary and the CLI: the confirmed verdicts, or the label
    saying the recipe is exploratory."""
    c = a.confirmation
    if c is None:
        if a.recipe is None:
            return [f"**No recipe**: {unscored_reason(a)}."]
        return [("Recipe status: **exploratory** (no confirmation runs: search scores only, one seed per "
                "trial).")]
    if not c.candidates and c.reference is not None and c.reference.trial_id is None:
        return ["Confirmation: no completed run of a searched recipe, only the reference.", noise_text(c)]
    return [*verdict_lines(c), noise_text(c)]


def within_noise(a: StudyAnalysis, knob: str) -> bool | None:
    """Whether the knob's effect range is below NOISE_FACTOR x the noise floor (None: no floor measured)."""
    effect = next((e for e in a.effects if e.knob == knob), None)
    if a.confirmation is None or effect is None:
        return None
    return a.confirmation.within_noise(effect.effect_range)


def noise_note(a: StudyAnalysis, knob: str) -> str:
    """'' without a measured noise floor; else the knob's effect range against NOISE_FACTOR x the floor."""
    within = within_noise(a, knob)
    if within is None:
        return ""
    c, effect = a.confirmation, next(e for e in a.effects if e.knob == knob)
    limit = f"{NOISE_FACTOR:g} × noise floor = {NOISE_FACTOR * c.noise_sd:.4f}"
    if within:
        return f"effect range {effect.effect_range:.4f} < {limit}: within seed noise"
    return f"effect range {effect.effect_range:.4f} ≥ {limit}: beyond seed noise"


def recipe_section(a: StudyAnalysis, recipe_text: str) -> Section:
    c, r = a.confirmation, a.recipe
    if r is None and c is None:
        return Section("Recipe", [f"**No recipe**: {unscored_reason(a)}."])
    title, blocks = (("Recipe (exploratory)", [EXPLORATORY]) if c is None
                     else ("Recipe", confirmation_blocks(c, list(a.study.knobs))))
    if r is None:
        return Section(title, [*blocks, f"**No recipe from the search**: {unscored_reason(a)}."])
    share = {row.knob: row.fanova for row in a.importance.rows}
    rows = []
    for k in r.knobs:
        iqr = f"{fmt(k.iqr[0])} – {fmt(k.iqr[1])}" if k.iqr else "–"
        weight = share.get(k.knob)
        note = ("" if weight is None
                else f"{weight:.0%}" + (" (hardly matters)" if weight < MINOR_IMPORTANCE else ""))
        rows.append([f"`{k.knob}`", fmt(k.value), spread_text(k, r.confidence.k), iqr, fmt(k.best_value),
                     note or "–"])
    table = Table(["knob", "recommended", f"top-{r.confidence.k} range", "top-k IQR",
                   f"best trial ({r.best.trial_id})", "importance (fANOVA)"], rows)
    intro = (f"Recommended value per knob: the median of the top-{r.confidence.k} search trials (most common "
             "choice for categorical knobs), with their spread. Values of knobs that hardly matter are free "
             "choices.")
    if sum(k.knob.startswith("pretrain.") for k in r.knobs) >= 2:
        intro += (" The pre-training knobs are one recipe (each trial fine-tuned from that exact "
                  "pre-training): the combination most common among the top trials, not each knob's own "
                  "median.")
    if c is not None and any(x.label == schema.RECIPE_MEDIAN for x in c.recipes):
        intro += " This top-k median (snapped onto the study's space) was re-run above as `median`."
    elif c is not None:
        intro += (" This top-k median was not itself re-run: the confirmed recipes above are the exact "
                  "configurations of the search trials they name.")
    best = r.best
    exact = ", ".join(f"`{k}` = {v!r}" for k, v in best.params.items())
    return Section(title, [
        *blocks, intro, table, Bullets(search_statements(r.confidence, a.study.metric)),
        (f"Best trial's exact configuration (`{best.trial_id}`, {best.status}, MLflow run `{best.run_id}`; "
         f"its other settings are the spec's): {exact or 'no searched knobs'}."),
        ("Ready-to-run spec for the final training run (`recipe.yaml`: the study's spec with the searched "
         "knobs fixed and the search section removed):"), Code(recipe_text)])


def search_statements(c: Confidence, metric: str) -> list[str]:
    """What the search alone says about the top-k (no comparison of the top-k with the trials they
    were selected from: that difference is positive by construction)."""
    out = [f"Supported by the top {c.k} of {c.n_pool} {c.pool} trials ({c.n_scored} scored in all)."]
    if math.isfinite(c.topk_ci[0]):
        out.append(f"Search scores of the top {c.k}: mean `{metric}` {c.topk_mean:.4f} (95% bootstrap CI "
                   f"{c.topk_ci[0]:.4f}–{c.topk_ci[1]:.4f}). They are the scores these trials were selected "
                   "by: expect less when the recipe is re-run.")
    else:
        out.append(f"Search score of the top {c.k}: `{metric}` {c.topk_mean:.4f} (one trial: no interval).")
    if c.best_beyond_noise is None:
        gap = f"{c.best_gap:.4f}" if math.isfinite(c.best_gap) else "n/a"
        out.append(f"The best trial's lead over the runner-up ({gap}) cannot be compared with evaluation "
                   f"noise (no test/mauc CI logged or a single trial).")
    elif c.best_beyond_noise:
        out.append(f"The best trial leads the runner-up by {c.best_gap:.4f}, more than the evaluation noise "
                   f"(median test CI half-width {c.noise:.4f}).")
    else:
        out.append(f"The best trial leads the runner-up by only {c.best_gap:.4f}, within the evaluation "
                   f"noise (median test CI half-width {c.noise:.4f}): the top trials are tied; prefer the "
                   "top-k recipe to the single best configuration.")
    return out


def importance_section(a: StudyAnalysis, figures: dict) -> Section:
    imp, title = a.importance, "Hyperparameter importance"
    constant = ["Not varied (one value in every trial): " + ", ".join(f"`{k}`" for k in imp.constant) + "."] \
        if imp.constant else []
    if not imp.ranked:
        return Section(title, [f"**Importance cannot be ranked**: {imp.reason}.", *constant])
    top = imp.rows[0]
    ped = [x for x in imp.rows if math.isfinite(x.ped_anova)]
    ped_text = f"PED-ANOVA ranks `{max(ped, key=lambda x: x.ped_anova).knob}` first" if ped \
        else "PED-ANOVA could not be computed"
    take = f"`{top.knob}` explains {top.fanova:.0%} of the objective's variance (fANOVA); {ped_text}."
    ranges = {e.knob: e.effect_range for e in a.effects}
    rows = [[f"`{x.knob}`", f"{x.fanova:.3f}",
             f"{x.fanova_low:.3f} – {x.fanova_high:.3f}" if math.isfinite(x.fanova_low) else "–",
             f"{x.ped_anova:.3f}" if math.isfinite(x.ped_anova) else "–",
             f"{x.p_first:.0%}" if math.isfinite(x.p_first) else "–", _range_cell(a, x.knob, ranges)]
            for x in imp.rows]
    if imp.n_resamples:
        stability = (f"Rank stability: {imp.n_resamples} bootstrap resamples of the {imp.n_trials} scored "
                     f"trials; an order is stated only when it holds in at least {imp.threshold:.0%} of them"
                     + (f" ({imp.stability_note})." if imp.stability_note else "."))
    else:
        stability = f"**Rank stability not checked**: {imp.stability_note}; no order between knobs is stated."
    if imp.n_incomplete:
        stability += (f" {imp.n_incomplete} scored trial(s) without a value for every varied knob are left "
                      "out of the importance.")
    blocks: list[Block] = [
        figure(figures, "importance", "Hyperparameter importance", take, "importance is not ranked"),
        Table(["knob", "fANOVA", "95% bootstrap range", "PED-ANOVA", "ranked first", "effect range"], rows),
        stability, _noise_paragraph(a)]
    if imp.statements:
        blocks.append(Bullets([order_text(a, st) for st in imp.statements]))
    return Section(title, [*blocks, *constant])


def order_text(a: StudyAnalysis, st: OrderStatement) -> str:
    """An order between two knobs; with a measured noise floor, an order whose higher knob moves the
    objective less than seed noise does is not a finding, and a knob within seed noise is named."""
    base = st.text(a.importance.threshold)
    c = a.confirmation
    if c is None or not math.isfinite(c.noise_sd):
        return base
    if st.stable and within_noise(a, st.higher):
        return (f"`{st.higher}` ranks above `{st.lower}` in {st.support:.0%} of resamples, but "
                f"{noise_note(a, st.higher)}: not a finding")
    notes = [f"`{k}`: {noise_note(a, k)}" for k in (st.higher, st.lower) if within_noise(a, k)]
    return base + (f"; {'; '.join(notes)}" if notes else "")


def reference_section(a: StudyAnalysis) -> Section:
    title = f"Comparison with the reference recipe: {a.options.reference_name}"
    if a.recipe is None:
        return Section(title, [f"**No comparison**: there is no recipe ({unscored_reason(a)})."])
    share = {row.knob: row.fanova for row in a.importance.rows}
    rows = []
    for r in a.reference:
        weight = share.get(r.knob)
        verdict = r.verdict
        if r.agrees is False and weight is not None and weight < MINOR_IMPORTANCE:
            verdict += f" — but this knob hardly matters here ({weight:.0%} of the variance)"
        agree = "–" if r.agrees is None else ("yes" if r.agrees else "**no**")
        diff = ("–" if math.isnan(r.diff)
                else f"{r.diff:+.3g} ({r.rel_diff:+.0%})" if math.isfinite(r.rel_diff)
                else f"{r.diff:+.3g}")
        rows.append([f"`{r.knob}`", fmt(r.reference), fmt(r.recommended), agree, diff, verdict])
    scores = ("Whether the recipe scores better than the reference is a different question: it needs "
              "confirmation runs (none here)." if a.confirmation is None else
              "The Recipe section compares the recipes' scores, seed by seed.")
    return Section(title, [
        ("A knob agrees when the reference value lies inside the top-k range (categoricals: the same "
        f"choice). {scores}"),
        Table(["knob", "reference", "recommended", "agrees", "difference", "verdict"], rows)])


def _noise_paragraph(a: StudyAnalysis) -> str:
    c = a.confirmation
    if c is None:
        return ("Exploratory: without confirmation runs the seed-to-seed noise is unknown, so neither these "
                "shares nor the orders below are checked against it.")
    if not math.isfinite(c.noise_sd):
        return "Not checked against seed noise: the confirmation runs did not measure a noise floor."
    return (f"Checked against the noise floor (seed SD {c.noise_sd:.4f}): a knob whose effect range (the "
            "forest's partial dependence, max minus min; else the spread of its bin means) is below "
            f"{NOISE_FACTOR:g} × {c.noise_sd:.4f} = {NOISE_FACTOR * c.noise_sd:.4f} is within seed noise.")


def _range_cell(a: StudyAnalysis, knob: str, ranges: dict[str, float]) -> str:
    value = ranges.get(knob)
    if value is None or is_missing(value):
        return "–"
    return f"{value:.4f}" + (" (within seed noise)" if within_noise(a, knob) else "")
