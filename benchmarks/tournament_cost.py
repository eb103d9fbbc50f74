"""What a recipe tournament costs (used by benchmarks/study_cost.py --tournament / --paper).

`--paper` is arithmetic on configs/paper-tournament-study.yaml: training FLOPs per image from the ViT-S/16
geometry (MAE step at each recipe's mask ratio: the encoder on the visible tokens, the 512-d 2-block decoder
on all; fine-tuning step on all 197 tokens; a training step = 3 forward passes; docs/paper.md "Compute and
schedules"), the paper's images per epoch (X-rays 0.3M for pre-training, NIH train_official for fine-tuning),
and the bracket's recipes alive per rung. The unit is one 800-epoch pre-training of the mean recipe, so that R
full pre-trainings cost exactly R. Survivors are taken to be the most expensive recipes (lowest mask ratio)
at every rung: the figure is an upper bound whatever the ranking turns out to be.

`--tournament` runs a small tournament on the phantom and, in the same run, the same recipes each pre-trained
to the last rung, and counts the pre-training epochs both ran (from the registry's histories and MLflow).
"""
from __future__ import annotations

from pathlib import Path

PRETRAIN_IMAGES = 266_340  # CheXpert train frontal + NIH train_official (docs/paper.md, X-rays 0.3M)
FINETUNE_IMAGES = 75_312  # NIH train_official
PATCH_PIXELS = 16 * 16 * 3


def block_flop(tokens: int, dim: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one transformer block: qkv + proj + MLP matmuls, and the two attention products."""
    return 2 * tokens * (4 + 2 * mlp_ratio) * dim**2 + 4 * tokens**2 * dim


def mae_step_gflop(mask_ratio: float, dim: int = 384, depth: int = 12, dec_dim: int = 512, dec_depth: int = 2,
                   patches: int = 196) -> float:
    """Training GFLOPs per image of one MAE step (ViT-S/16 dec512d2b by default)."""
    visible = int(patches * (1 - mask_ratio))  # the reference's len_keep
    fwd = (2 * visible * PATCH_PIXELS * dim + depth * block_flop(visible + 1, dim)
           + 2 * (visible + 1) * dim * dec_dim + dec_depth * block_flop(patches + 1, dec_dim)
           + 2 * patches * dec_dim * PATCH_PIXELS)
    return 3 * fwd / 1e9


def finetune_step_gflop(dim: int = 384, depth: int = 12, patches: int = 196) -> float:
    fwd = 2 * patches * PATCH_PIXELS * dim + depth * block_flop(patches + 1, dim)
    return 3 * fwd / 1e9


def paper_scale(spec) -> tuple[float, list[str]]:
    """(x, explanation lines) for a tournament spec: FLOPs spent / one 800-epoch pre-training of the mean
    recipe."""
    from thoraxmae.study.spec.tournament_plan import alive_counts, recipes, scoring_epochs

    t = spec.search.tournament
    rs = recipes(spec)
    cost = sorted((mae_step_gflop(r.get("pretrain.mask_ratio", spec.pretrain.mask_ratio)) for r in rs),
                  reverse=True)
    mean = sum(cost) / len(cost)
    unit = t.rungs[-1] * PRETRAIN_IMAGES * mean
    counts = alive_counts(len(rs), t.rungs, t.keep)
    pretrain = sum(sum(cost[:c]) * (e - p) * PRETRAIN_IMAGES
                   for c, e, p in zip(counts, t.rungs, [0, *t.rungs[:-1]], strict=True))
    scored = [c for i, c in enumerate(counts) if c > 1 or i == len(counts) - 1]
    finetunes = t.scoring.trials * sum(scored)
    scoring = finetunes * scoring_epochs(spec) * FINETUNE_IMAGES * finetune_step_gflop()
    epochs = sum(c * (e - p) for c, e, p in zip(counts, t.rungs, [0, *t.rungs[:-1]], strict=True))
    lines = [(f"recipes: {len(rs)}; MAE GFLOP/img {', '.join(f'{c:.1f}' for c in cost)} (mean {mean:.2f}); "
             f"fine-tune {finetune_step_gflop():.1f} GFLOP/img"),
             (f"rungs {t.rungs}, alive {counts}: {epochs} "
             f"pre-training epochs; scoring: {finetunes} fine-tunes x {scoring_epochs(spec)} epochs"),
             (f"pre-training {pretrain / unit:.3f} + scoring {scoring / unit:.3f} "
              "(survivors: the most expensive recipes) "
             f"vs {len(rs)} for every recipe to {t.rungs[-1]} epochs")]
    return (pretrain + scoring) / unit, lines


def paper_main(config: Path) -> None:
    from thoraxmae.study.spec.load import load_spec

    spec = load_spec(config, check_files=False)
    x, lines = paper_scale(spec)
    for line in lines:
        print(line)
    print(f"paper-scale: {x:.2f} x one 800-epoch pre-training")


def tournament_spec(name: str, store: Path, root: Path, rungs: list[int]) -> dict:
    return {
        "name": name, "stage": "pipeline", "data": {"store": str(store)},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2,
                  "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
        "pretrain": {"epochs": rungs[-1], "warmup_epochs": 1, "batch_size": 32, "max_steps_per_epoch": 5,
                     "schedule": "constant"},
        "finetune": {"epochs": 2, "warmup_epochs": 1, "batch_size": 32, "max_steps_per_epoch": 5,
                     "bootstrap": 0},
        "search": {"scheduler": {"type": "none"},
                   "space": {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]},
                             "pretrain.crop_min": {"type": "categorical", "choices": [0.2, 0.5]},
                             "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 0.9}},
                   "tournament": {"rungs": rungs, "keep": 0.5, "scoring": {"trials": 2}}},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"}, "storage_path": str(root / f"studies-{name}")}


def tournament_main(root: Path, store: Path, rungs: list[int]) -> None:
    """The tournament, then every recipe pre-trained to the last rung (a pipeline study, one trial per
    recipe)."""
    import time

    from thoraxmae.study.run.tournament import start_tournament, summary_lines
    from thoraxmae.study.run.tune import run_study
    from thoraxmae.study.spec.load import parse_spec
    from thoraxmae.study.spec.tournament_plan import planned_epochs

    spec = parse_spec(tournament_spec("tournament", store, root, rungs))
    t0 = time.monotonic()
    summary = start_tournament(spec)
    wall = time.monotonic() - t0
    for line in summary_lines(summary):
        print(line)
    raw = tournament_spec("every-recipe", store, root, rungs)
    raw["search"].pop("tournament")
    raw["search"].update({"num_samples": 4, "coverage": 1, "sampler": {"type": "random", "seed": 0}})
    full_spec = parse_spec(raw)
    t0 = time.monotonic()
    run_study(full_spec)
    full_wall = time.monotonic() - t0
    full = full_epochs_run(full_spec)
    spent, e = summary["pretrain_epochs"], rungs[-1]
    assert spent == planned_epochs(4, rungs, 0.5), (spent, planned_epochs(4, rungs, 0.5))
    print(f"wall: tournament {wall:.0f} s (with scoring), every recipe to {e} epochs {full_wall:.0f} s "
          "(one fine-tune each)")
    print(f"tournament: pretrain_epochs={spent} full={full} ratio={full / spent:.2f} vs_one={spent / e:.2f}")


def full_epochs_run(spec) -> int:
    """Pre-training epochs the registry holds for the study's recipes (each entry's history)."""
    from thoraxmae.study.registry import Registry

    return sum(len({h.get("pretrain/epoch") for h in e.history})
               for e in Registry(spec.storage_path).entries())
