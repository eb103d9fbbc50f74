"""One cut of a recipe tournament, from the paired scores of a rung to kept or dropped (no Ray, no MLflow).

Each recipe alive at a rung has k scores, one per scoring configuration j (the same configurations and seeds
for
every recipe). Recipes are ranked by their mean score; the top ceil(keep x n) go on. Ties at the cut: a recipe
whose mean equals the last kept recipe's mean (to 1e-12) is kept too, so equal evidence is never split by
list order. A recipe dropped although its paired 95% interval against the last kept recipe covers 0 is marked
`close`: the report counts such cuts (the decision was within noise), and the bracket still spends the
planned epochs. The evidence per recipe: its k scores, their mean, the paired difference to the rung's leader
with a t-interval over the k configurations, its rank, kept or dropped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

TIE_TOL = 1e-12
TIE_RULE = ("top ceil(keep x n) by mean paired score; recipes whose mean equals the cut's are kept too; "
            "a dropped recipe whose paired 95% CI against the cut covers 0 is marked close")


@dataclass(frozen=True)
class Standing:
    recipe: str  # label, `pretrain.crop_min=0.5, pretrain.mask_ratio=0.9`
    index: int  # the recipe's place in the spec's recipe list
    scores: list[float]  # one per scoring configuration j
    mean: float
    rank: int  # 1 = the rung's leader
    diff_to_leader: float  # mean over j of (score - leader's score)
    ci_low: float
    ci_high: float
    kept: bool
    close: bool  # dropped, and its paired CI against the cut covers 0


def paired_ci(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a - b paired by position: a t-interval over the pairs."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b, strict=True)]
    k = len(d)
    mean = sum(d) / k
    if k < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (k - 1))
    half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * sd / math.sqrt(k)
    return mean, mean - half, mean + half


def decide(scores: dict[int, list[float]], labels: dict[int, str], keep: float, mode: str = "max",
           last: bool = False) -> list[Standing]:
    """The standings of one rung (best first); at the `last` rung every recipe is kept (nothing to cut)."""
    sign = 1.0 if mode == "max" else -1.0
    means = {i: sum(s) / len(s) for i, s in scores.items()}
    order = sorted(scores, key=lambda i: (-sign * means[i], i))
    n_keep = len(order) if last else max(1, math.ceil(keep * len(order)))
    cut = order[n_keep - 1]
    leader = order[0]
    out = []
    for rank, i in enumerate(order, 1):
        kept = rank <= n_keep or abs(means[i] - means[cut]) <= TIE_TOL
        diff, low, high = paired_ci(scores[i], scores[leader])
        close = False
        if not kept:
            _, c_low, c_high = paired_ci(scores[i], scores[cut])
            close = c_low <= 0 <= c_high
        out.append(Standing(labels[i], i, list(scores[i]), means[i], rank, diff, low, high, kept, close))
    return out


def evidence(epochs: int, standings: list[Standing], keep: float) -> dict[str, Any]:
    """The JSON logged on the parent run for one rung (schema.ARTIFACT_RUNG)."""
    return {"epochs": epochs, "keep": keep, "tie_rule": TIE_RULE, "leader": standings[0].recipe,
            "kept": [s.recipe for s in standings if s.kept], "standings": [asdict(s) for s in standings]}
