"""Search quality: how close the recipe a study recommends lands to the best recipe, and at what compute.

    python benchmarks/search_quality.py            # old vs new defaults, 2 surfaces x 5 repetitions
    python benchmarks/search_quality.py --sweep    # also the variants the new defaults were chosen from

One process, seeded, no Ray cluster and no training: the project's own search (`make_search`: OptunaSearch
with the spec's sampler and points), scheduler (`make_scheduler`: ASHA), confirmation candidates
(analysis/candidates.py) and confirmation summary (analysis/confirm.py, whose `recommended` recipe is the
pick) run on a synthetic objective shaped like the paper's fine-tuning recipe (docs/paper.md):

- the study is configs/paper-finetune-study.yaml (5 knobs, 75 epochs, 2 trials at a time, the paper point
  first; `new` is the file as shipped, `old` its settings before issue 21), driven the way Tune drives it:
  trials start as slots free up, report `val/mauc` every epoch, ASHA
  stops some at its rungs, the searcher is told every result;
- the surface is a sum of quadratic bowls (layer decay, RandAug magnitude, DropPath, log blr, log crop_min);
  surface `paper` has its optimum at the paper's recipe, surface `away` 0.7 pt of mAUC away from it (at
  layer decay 0.7, RandAug 9, DropPath 0.25, blr 5e-4, crop 0.2). The learning curve rises with a time
  constant that grows with RandAug and DropPath (regularised recipes learn slower, as ASHA sees them);
- seed noise: 0.23 pt per evaluation (0.10 shared by every recipe run with the same seed, 0.21 the run's
  own), 0.05 pt per epoch; a confirmation run's test score has its own 0.23 pt.

Per repetition: the gap (pt) of the recommended recipe's true score to the best point of a 768-point grid
(4 x 4 x 4 x 4 x 3 levels), and compute = epochs run (search + confirmation) / (768 x 75). The last line is
the new defaults on the harder surface (`away`).
"""
from __future__ import annotations

import argparse
import heapq
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "configs" / "paper-finetune-study.yaml"
METRIC, TEST = "val/mauc", "test/mauc"
REPS = 5
SEED_SHARED, SEED_OWN, EPOCH_JITTER = 0.0010, 0.0021, 0.0005  # AUC fractions (0.001 = 0.1 pt)
PAPER = {"finetune.layer_decay": 0.55, "finetune.randaug_magnitude": 6, "finetune.drop_path": 0.2,
         "finetune.blr": 2.5e-4, "finetune.crop_min": 0.08}
AWAY = {"finetune.layer_decay": 0.7, "finetune.randaug_magnitude": 9, "finetune.drop_path": 0.25,
        "finetune.blr": 5e-4, "finetune.crop_min": 0.2}
# pt of mAUC per squared unit (blr and crop_min on log10): the paper point lies 0.70 pt below AWAY's optimum
CURVATURE = {"finetune.layer_decay": 13.3, "finetune.randaug_magnitude": 0.0167, "finetune.drop_path": 20.0,
             "finetune.blr": 1.66, "finetune.crop_min": 0.316}
LOG_KNOBS = ("finetune.blr", "finetune.crop_min")
GRID = {"finetune.layer_decay": (0.4, 0.55, 0.7, 0.85), "finetune.randaug_magnitude": (0, 3, 6, 9),
        "finetune.drop_path": (0.0, 0.1, 0.2, 0.3), "finetune.blr": (1e-4, 2.5e-4, 5e-4, 1e-3),
        "finetune.crop_min": (0.08, 0.2, 0.5)}
PEAK = 0.823  # the paper's ViT-S/16 mAUC (docs/paper.md)

# Old: the shipped config before issue 21 (32 trials, TPE, ASHA grace 10 / rf 3, confirm the raw top-1 x 3
# seeds).
OLD = {"name": "old", "overrides": ["search.num_samples=32", "search.sampler.type=tpe",
                                    "search.scheduler.grace_period=10"], "top": 1, "seeds": 3,
                                    "smoothed": False}
# New: the shipped config as it is (its `confirm:` section: top 3 x 3 seeds, analysis/candidates.py's pick).
NEW = {"name": "new", "overrides": [], "top": None, "seeds": None, "smoothed": True}
# --sweep: the new defaults with one setting changed, what each shipped setting was chosen against.
SWEEP = [
    {"name": "32 trials", "overrides": ["search.num_samples=32"], "top": None, "seeds": None,
     "smoothed": True},
    {"name": "random sampler", "overrides": ["search.sampler.type=random"], "top": None, "seeds": None,
     "smoothed": True},
    {"name": "ASHA grace 10", "overrides": ["search.scheduler.grace_period=10"], "top": None, "seeds": None,
     "smoothed": True},
    {"name": "no ASHA", "overrides": ["search.scheduler.type=none"], "top": None, "seeds": None,
     "smoothed": True},
    {"name": "raw top-3", "overrides": [], "top": None, "seeds": None, "smoothed": False},
    {"name": "top 2 x 4 seeds", "overrides": [], "top": 2, "seeds": 4, "smoothed": True},
    {"name": "top 4 x 3 seeds", "overrides": [], "top": 4, "seeds": 3, "smoothed": True},
]


def true_score(surface: dict[str, Any], x: dict[str, Any]) -> float:
    """The recipe's expected mAUC (fraction) on a surface whose optimum is `surface`, PEAK + 0.7 pt for
    AWAY."""
    top = PEAK + (0.007 if surface is AWAY else 0.0)
    loss = 0.0
    for knob, c in CURVATURE.items():
        u, v = float(x[knob]), float(surface[knob])
        if knob in LOG_KNOBS:
            u, v = math.log10(u), math.log10(v)
        loss += c * (u - v) ** 2
    return top - loss / 100.0


def time_constant(x: dict[str, Any]) -> float:
    """Epochs to come within 1/e of the plateau: slower with more regularisation."""
    return 8.0 * (1.0 + 0.6 * float(x["finetune.randaug_magnitude"]) / 9
                  + 1.0 * float(x["finetune.drop_path"]) / 0.3)


def curve(x: dict[str, Any], surface: dict[str, Any], epochs: int, offset: float,
          rng: np.random.Generator) -> np.ndarray:
    """[E] val/mauc per epoch: the plateau minus an exponential deficit, + the run's offset and jitter."""
    e = np.arange(1, epochs + 1)
    return (true_score(surface, x) - 0.05 * np.exp(-e / time_constant(x)) + offset
            + rng.normal(0, EPOCH_JITTER, epochs))


@dataclass
class _Trial:  # what Tune's schedulers read of a trial
    trial_id: str


def run_search(spec, surface: dict[str, Any], rng: np.random.Generator, shared: np.ndarray) -> pd.DataFrame:
    """One study, driven as Tune drives it (trials start as slots free, one result per epoch); one row per
    trial in analysis/tables.py's shape."""
    from ray.tune.schedulers import TrialScheduler

    from thoraxmae.study.run.search import make_scheduler, make_search
    from thoraxmae.study.spec.space import flatten_config

    searcher, scheduler = make_search(spec), make_scheduler(spec)
    scheduler.set_search_properties(spec.metric, spec.mode)
    max_t, knobs = spec.max_t, list(spec.search.space)
    events: list[tuple[int, int, str, int]] = []  # (time, order, trial id, epoch)
    trials: dict[str, dict[str, Any]] = {}
    clock = order = 0

    def start(now: int) -> None:
        nonlocal order
        tid = f"{len(trials):03d}"
        x = {k: v for k, v in flatten_config(searcher.suggest(tid)).items() if k in knobs}
        scheduler.on_trial_add(None, _Trial(tid))
        offset = shared[0] + rng.normal(0, SEED_OWN)  # search trials all run seed 0 (the spec's)
        trials[tid] = {"x": x, "curve": curve(x, surface, max_t, offset, rng), "epochs": 0,
                       "status": "running"}
        order += 1
        heapq.heappush(events, (now + 1, order, tid, 1))

    for _ in range(min(spec.resources.max_concurrent_trials, spec.search.num_samples)):
        start(clock)
    while events:
        clock, _, tid, epoch = heapq.heappop(events)
        t = trials[tid]
        t["epochs"] = epoch
        result = {spec.metric: float(t["curve"][epoch - 1]), "epoch": epoch, "training_iteration": epoch}
        searcher.on_trial_result(tid, result)
        stop = scheduler.on_trial_result(None, _Trial(tid), result) == TrialScheduler.STOP
        if stop or epoch >= max_t:
            t["status"] = "completed" if epoch >= max_t else "pruned"
            searcher.on_trial_complete(tid, result)
            scheduler.on_trial_complete(None, _Trial(tid), result)
            if len(trials) < spec.search.num_samples:
                start(clock)
        else:
            order += 1
            heapq.heappush(events, (clock + 1, order, tid, epoch + 1))
    rows = []
    for tid, t in trials.items():
        ran = t["curve"][:t["epochs"]]
        rows.append({"trial_id": tid, "run_id": f"run-{tid}", "status": t["status"],
                     "objective": float(ran.max()),
                     "epochs_run": float(t["epochs"]), "max_epochs": float(max_t), TEST: math.nan,
                     f"{TEST}_ci_low": math.nan, f"{TEST}_ci_high": math.nan, **t["x"]})
    return pd.DataFrame(rows)


def pick(spec, trials: pd.DataFrame, variant: dict, surface: dict[str, Any], rng: np.random.Generator,
         shared: np.ndarray) -> tuple[dict[str, Any], int]:
    """The recommended recipe after confirmation (analysis.confirm's `recommended`) and the confirmation's
    runs; a candidate equal to the reference runs once, as the reference."""
    from thoraxmae.analysis.candidates import confirm_candidates, same_point
    from thoraxmae.analysis.confirm import summarize_confirmation
    from thoraxmae.analysis.load import ConfirmRecord
    from thoraxmae.analysis.tables import knob_infos, rank_trials, scored_trials
    from thoraxmae.study import schema

    space = {k: d.model_dump(exclude_none=True) for k, d in spec.search.space.items()}
    scored = scored_trials(trials)
    infos = knob_infos(trials, tuple(space), space)
    if variant["smoothed"]:
        chosen = [(c.label, c.params)
                  for c in confirm_candidates(scored, infos, spec.mode, variant["top"], space)]
    else:  # the old study side: the best completed trials by their own score
        done = rank_trials(scored[scored["status"] == schema.STATUS_COMPLETED],
                           spec.mode).head(variant["top"])
        chosen = [(f"trial-{r['trial_id']}", {k: r[k] for k in space}) for r in done.to_dict("records")]
    recipes = [(schema.RECIPE_REFERENCE, dict(PAPER))]
    recipes += [(label, x) for label, x in chosen if not same_point(x, PAPER)]
    runs, start = [], 0.0
    for label, x in recipes:
        for i in range(variant["seeds"]):
            seed = 1000 + i
            val = curve(x, surface, spec.max_t, shared[1 + i] + rng.normal(0, SEED_OWN), rng)
            test = true_score(surface, x) + rng.normal(0, math.hypot(SEED_SHARED, SEED_OWN))
            start += 1
            runs.append(ConfirmRecord(f"c{start}", label, None, seed, schema.STATUS_COMPLETED, start,
                                      {k: str(v) for k, v in x.items()}, {TEST: test},
                                      {METRIC: list(enumerate(val.tolist(), 1))}))
    c = summarize_confirmation(runs, trials, tuple(space), METRIC, spec.mode, spec.stage)
    return dict(recipes)[c.recommended], len(recipes) * variant["seeds"] * spec.max_t


def grid_best(surface: dict[str, Any]) -> float:
    return max(true_score(surface, dict(zip(GRID, p, strict=True))) for p in product(*GRID.values()))


def evaluate(variant: dict, surface_name: str, reps: int = REPS) -> dict[str, float]:
    from thoraxmae.study.spec.load import load_spec

    surface = PAPER if surface_name == "paper" else AWAY
    best = grid_best(surface)
    grid_epochs = math.prod(len(v) for v in GRID.values())
    gaps, computes = [], []
    for rep in range(reps):
        spec = load_spec(SPEC, [*variant["overrides"], f"search.sampler.seed={rep}"], check_files=False)
        variant = {**variant, "top": variant["top"] or spec.confirm.top,
                   "seeds": variant["seeds"] or spec.confirm.seeds}
        rng = np.random.default_rng([rep, 0 if surface is PAPER else 1])
        np.random.seed(rep)  # ASHA draws its bracket from numpy's global generator
        # per seed: search seed 0, then 1000, 1001, ...
        shared = rng.normal(0, SEED_SHARED, 1 + variant["seeds"])
        trials = run_search(spec, surface, rng, shared)
        recipe, confirm_epochs = pick(spec, trials, variant, surface, rng, shared)
        gaps.append(100 * (best - true_score(surface, recipe)))
        computes.append((trials["epochs_run"].sum() + confirm_epochs) / (grid_epochs * spec.max_t))
    return {"gap": float(np.mean(gaps)), "within": int(sum(g <= 0.2 for g in gaps)), "reps": reps,
            "compute": 100 * float(np.mean(computes)), "gaps": gaps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", action="store_true", help="also print the variants the new defaults came "
                                                             "from")
    parser.add_argument("--reps", type=int, default=REPS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    began = time.perf_counter()
    variants = [OLD, *(SWEEP if args.sweep else []), NEW]
    print(f"{'defaults':<28} {'surface':<7} {'gap pt':>7} {'within 0.2':>10} {'compute':>8}   gaps per "
          "repetition")
    results = {}
    for surface in ("paper", "away"):
        for v in variants:
            r = results[(v["name"], surface)] = evaluate(v, surface, args.reps)
            print(f"{v['name']:<28} {surface:<7} {r['gap']:>7.3f} {r['within']:>6}/{r['reps']:<3} "
                  f"{r['compute']:>7.1f}%   " + " ".join(f"{g:.2f}" for g in r["gaps"]), flush=True)
    print(f"({time.perf_counter() - began:.0f} s)")
    r = results[("new", "away")]
    print(f"search quality: gap={r['gap']:.3f} within={r['within']}/{r['reps']} compute={r['compute']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
