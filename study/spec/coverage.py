"""Coverage of the expensive choices of a study before the sampler exploits.

A pipeline study is two-level: few pre-training recipes (each pre-trained once, see
study.registry) and many cheap fine-tuning trials. The knobs that pick a pre-training recipe
(every searched `pretrain.*` knob), and in a fine-tuning study the encoder (`finetune.init`), are
*covered*: every combination of their values gets `search.coverage` trials before TPE takes over.
The covered trials are enqueued as complete points, round-robin over the combinations (so concurrent
trials start different pre-trainings); their fine-tuning knobs are drawn at random from the space
with the sampler's seed, which is what TPE's start-up trials would do anyway.

Covered knobs need a finite set of values: a categorical, an int range, or a float range with `step`.
A continuous range is a spec error that names the knob and the fix (docs/architecture.md).
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Any

from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.space import CategoricalSpace, FloatSpace, IntSpace

MAX_COMBINATIONS = 64


def covered_knobs(spec: StudySpec) -> list[str]:
    """The searched knobs whose every value combination is covered."""
    space = spec.search.space
    if spec.stage == "pipeline":
        return sorted(k for k in space if k.startswith("pretrain."))
    return [k for k in ("finetune.init",) if k in space]


def knob_values(dist: FloatSpace | IntSpace | CategoricalSpace) -> list[Any] | None:
    """The finite values of a space, or None for a continuous range."""
    if isinstance(dist, CategoricalSpace):
        return list(dist.choices)
    if isinstance(dist, IntSpace):
        return list(range(dist.low, dist.high + 1, dist.step))
    if dist.step is None:
        return None
    n = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
    return [round(dist.low + i * dist.step, 12) for i in range(n)]


def combinations(spec: StudySpec) -> list[dict[str, Any]]:
    knobs = covered_knobs(spec)
    values = [knob_values(spec.search.space[k]) or [] for k in knobs]
    return [dict(zip(knobs, combo, strict=True)) for combo in itertools.product(*values)] if knobs else []


def coverage_problems(spec: StudySpec) -> list[str]:
    """StudySpec problems of coverage (one line each, starting with the field path)."""
    k = spec.search.coverage
    knobs = covered_knobs(spec)
    if not k or not knobs:
        return []
    problems = []
    for knob in knobs:
        if knob_values(spec.search.space[knob]) is None:
            dist = spec.search.space[knob]
            problems.append(f"search.space.{knob}: a {spec.stage} study covers every value of `{knob}` "
                            f"(search.coverage={k}), so it needs a finite set of values: use "
                            f"{{type: categorical, choices: [...]}} or add `step` (e.g. step: "
                            f"{_suggest_step(dist)}); or set search.coverage: 0 to let the sampler pick "
                            "freely")
    if problems:
        return problems
    n = len(combinations(spec))
    if n > MAX_COMBINATIONS:
        problems.append(f"search.space: {n} combinations of {', '.join(knobs)} (at most {MAX_COMBINATIONS}); "
                        f"use fewer values or set search.coverage: 0")
    elif n * k > spec.search.num_samples:
        problems.append(f"search.num_samples={spec.search.num_samples} is below {n} combinations of "
                        f"{', '.join(knobs)} x search.coverage={k} = {n * k}; raise num_samples or lower "
                        "coverage")
    return problems


def coverage_points(spec: StudySpec, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete points that, after `given`, give every combination `search.coverage` trials (round-robin)."""
    combos = combinations(spec)
    k = spec.search.coverage
    if not combos or not k:
        return []
    keys = list(combos[0])

    def combo_of(point: dict[str, Any]) -> tuple:
        return tuple(point.get(knob) for knob in keys)

    have = {combo_of(c): 0 for c in combos}
    for point in given:
        if combo_of(point) in have:
            have[combo_of(point)] += 1
    rng = random.Random(spec.search.sampler.seed)
    others = [knob for knob in spec.search.space if knob not in keys]
    out = []
    for round_ in range(k):
        for combo in combos:
            if have[combo_of(combo)] > round_:
                continue
            point = {knob: _draw(spec.search.space[knob], rng) for knob in others}
            out.append({**point, **combo})
    return out


def _draw(dist: FloatSpace | IntSpace | CategoricalSpace, rng: random.Random) -> Any:
    values = knob_values(dist)
    if values is not None and not (isinstance(dist, IntSpace) and dist.log):
        return values[rng.randrange(len(values))]
    if dist.log:
        value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        return round(value) if isinstance(dist, IntSpace) else value
    return rng.uniform(dist.low, dist.high)


def _suggest_step(dist: Any) -> str:
    span = getattr(dist, "high", 1) - getattr(dist, "low", 0)
    return f"{span / 2:g}" if span > 0 else "0.05"


def study_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every point the search evaluates first: the spec's points_to_evaluate, complete, then the coverage
    points that give each pre-training recipe (or encoder) its share of trials."""
    explicit = spec.explicit_points()
    return explicit + coverage_points(spec, explicit)
