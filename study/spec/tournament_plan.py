"""A spec's tournament (study/spec/tournament.py declares `search.tournament`): its checks, recipes, paired
scoring
points and the epochs its bracket spends.

The recipes are the value combinations of the searched `pretrain.*` knobs (study/spec/coverage.py), the
paper's
first; the k scoring configurations are the paper's fine-tuning point, then k-1 points drawn once from the
`finetune.*` knobs of the space (`scoring.seed`), and the j-th uses fine-tuning seed `scoring.seed + j`: the
same
k for every recipe (paired).
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Any

from thoraxmae.study import schema
from thoraxmae.study.spec.coverage import combinations, knob_values
from thoraxmae.study.spec.model import StudySpec

FIELD = "search.tournament"


def tournament_problems(spec: StudySpec) -> list[str]:
    """One line per problem, each starting with the field it names (checked before Ray starts)."""
    t = spec.search.tournament
    if spec.stage != "pipeline":
        return [f"{FIELD}: only a pipeline study runs a tournament (this one is stage {spec.stage})"]
    problems = []
    rungs = t.rungs
    if not rungs or any(b <= a for a, b in itertools.pairwise(rungs)) or rungs[0] < 1:
        problems.append(f"{FIELD}.rungs={rungs}: must be increasing pre-training epochs >= 1")
    elif rungs[-1] != spec.pretrain.epochs:
        problems.append(f"{FIELD}.rungs={rungs}: the last rung must be "
                        f"pretrain.epochs={spec.pretrain.epochs}")
    if not 0 < t.keep < 1:
        problems.append(f"{FIELD}.keep={t.keep}: must be in (0, 1)")
    if t.scoring.trials < 2:
        problems.append(f"{FIELD}.scoring.trials={t.scoring.trials}: at least 2 paired fine-tunes per recipe "
                        "(a paired interval needs 2)")
    if spec.pretrain.schedule == "cosine":
        problems.append("pretrain.schedule=cosine: a tournament continues pre-trainings from rung to rung, "
                        "and a cosine schedule is not horizon-free; set pretrain.schedule: constant")
    epochs = scoring_epochs(spec)
    if epochs > 1 and spec.finetune.warmup_epochs >= epochs:
        problems.append(f"{FIELD}.scoring.epochs={epochs}: must exceed finetune.warmup_epochs="
                        f"{spec.finetune.warmup_epochs}")
    if spec.search.scheduler.type != "none":
        problems.append(f"search.scheduler.type={spec.search.scheduler.type}: a tournament's scoring "
                        "fine-tunes are never stopped early; set search.scheduler: {type: none}")
    if "pretrain.epochs" in spec.search.space or "finetune.epochs" in spec.search.space:
        problems.append(f"search.space: the tournament sets the epochs ({FIELD}.rungs, "
                        f"{FIELD}.scoring.epochs); do not search pretrain.epochs or finetune.epochs")
    n = len(combinations(spec))
    if n < 2:
        problems.append("search.space: a tournament needs at least 2 pre-training recipes (value "
                        f"combinations of searched pretrain.* knobs), found {n}")
    return problems


def scoring_epochs(spec: StudySpec) -> int:
    t = spec.search.tournament
    return t.scoring.epochs if t.scoring.epochs is not None else spec.finetune.epochs


def recipes(spec: StudySpec) -> list[dict[str, Any]]:
    """The pre-training recipes, the paper's first when it is one of them (the rest in grid order)."""
    combos = combinations(spec)
    paper = [c for c in combos if all(schema.PAPER_RECIPE.get(k) == v for k, v in c.items())]
    return paper + [c for c in combos if c not in paper]


def scoring_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The k fine-tuning configurations every recipe is scored with: {finetune knob: value, "finetune.seed":
    s}.
    The first is the paper's point (the spec's fixed value for a knob without one), the rest drawn once."""
    t = spec.search.tournament
    knobs = sorted(k for k in spec.search.space if k.startswith("finetune."))
    rng = random.Random(t.scoring.seed)
    points = []
    for j in range(t.scoring.trials):
        point: dict[str, Any] = {}
        for knob in knobs:
            dist = spec.search.space[knob]
            if j == 0:
                field = knob.split(".", 1)[1]
                point[knob] = schema.PAPER_RECIPE.get(knob, getattr(spec.finetune, field))
            else:
                point[knob] = _draw(rng, dist, knob_values(dist))
        point["finetune.seed"] = t.scoring.seed + j
        points.append(point)
    return points


def _draw(rng: random.Random, dist: Any, values: list[Any] | None) -> Any:
    if values is not None:
        return rng.choice(values)
    if getattr(dist, "log", False):
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    return float(rng.uniform(dist.low, dist.high))


def alive_counts(n: int, rungs: list[int], keep: float) -> list[int]:
    """Recipes pre-trained to each rung: n, then ceil(keep x previous) (ties may keep more: run time
    counts)."""
    counts = [n]
    for _ in rungs[1:]:
        counts.append(max(1, math.ceil(keep * counts[-1])))
    return counts


def planned_epochs(n: int, rungs: list[int], keep: float) -> int:
    """Pre-training epochs the bracket spends with continuation: sum over rungs of alive x (rung - previous
    rung)."""
    counts = alive_counts(n, rungs, keep)
    return sum(c * (e - p) for c, e, p in zip(counts, rungs, [0, *rungs[:-1]], strict=True))
