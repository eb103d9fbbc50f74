"""`thoraxmae study confirm NAME [--top K] [--seeds N] [--reference FILE]`: re-run the chosen recipes and a
reference with fresh, shared seeds (study/run/confirm.py), so the report's recipe rests on paired replicates.
The recipes are chosen here, where analysis and study meet: analysis/candidates.py ranks the study's scored
trials by a smoothed estimate and always includes the top-k median recipe (issue 21: a raw top-1 carries the
winner's curse). Defaults (top 3 x 3 seeds) come from benchmarks/search_quality.py."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TOP, DEFAULT_SEEDS = 3, 3  # = ConfirmConfig's defaults (study/spec/model.py)
TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)"


def register(ssub: argparse._SubParsersAction) -> None:
    from thoraxmae.study.tracking.lookup import storage_arg

    q = ssub.add_parser("confirm", help="re-run the top-k recipes and a reference with n fresh seeds each (paired)")
    q.add_argument("name")
    q.add_argument("--top", type=int, default=None, help="recipes to confirm: the top-k median, then the best smoothed estimates "
                   f"(default: spec, else {DEFAULT_TOP})")
    q.add_argument("--seeds", type=int, default=None, help=f"seeds per recipe, shared by all (default: spec, else {DEFAULT_SEEDS})")
    q.add_argument("--reference", type=Path, default=None, metavar="YAML",
                   help="reference recipe (knob: value lines; default: the paper's)")
    q.add_argument("--tracking-uri", help=TRACKING_HELP)
    q.add_argument("--storage-path", type=storage_arg,
                   help="read the spec from Tune's folder (a folder or s3://...) instead of MLflow")
    q.set_defaults(func=cmd_confirm)


def cmd_confirm(args: argparse.Namespace) -> int:
    from thoraxmae.study.tracking.lookup import check_tracking_uri, locate_spec

    spec = locate_spec(args.name, args.tracking_uri, args.storage_path)
    check_tracking_uri(spec.tracking.uri, write=True)
    cfg = spec.confirm
    top = args.top if args.top is not None else (cfg.top if cfg else DEFAULT_TOP)
    seeds = args.seeds if args.seeds is not None else (cfg.seeds if cfg else DEFAULT_SEEDS)
    reference = args.reference if args.reference is not None else (cfg.reference if cfg else None)
    return confirm_and_print(spec, top, seeds, reference)


def confirm_and_print(spec, top: int, seeds: int, reference: Path | None) -> int:
    """Run (or resume) the confirmation on Ray and print what it ran; exit status 0 when every run scored."""
    from rich.console import Console

    from thoraxmae.cli.progress import StudyProgress
    from thoraxmae.study.run.confirm import check_sizes, run_confirm
    from thoraxmae.study.run.ray_local import init_ray

    check_sizes(top, seeds)  # before Ray starts
    console = Console()
    recipes = choose_recipes(spec, top)
    console.print(f"confirming study [bold]{spec.name}[/]: {', '.join(r.label for r in recipes)} + reference, "
                  f"{seeds} seeds each (fine-tuning only where pre-trainings are registered)")
    init_ray()
    progress = StudyProgress(spec)
    grid = run_confirm(spec, recipes, seeds, reference, callbacks=[progress])
    failed = len(grid.errors)
    console.print(f"confirmation: {len(grid) - failed} of {len(grid)} runs finished"
                  + (f", {failed} failed" if failed else "")
                  + f"; `thoraxmae report {spec.name}` shows the verdicts")
    return 0 if failed == 0 else 1


def choose_recipes(spec, top: int) -> list:
    """The `top` recipes to confirm (analysis/candidates.py), read from the study's MLflow runs."""
    from thoraxmae.analysis.candidates import study_candidates
    from thoraxmae.analysis.load import load_study
    from thoraxmae.study.run.confirm import ConfirmRecipe

    study = load_study(spec.name, spec.tracking.uri)
    return [ConfirmRecipe(c.label, c.run_id, c.params) for c in study_candidates(study, top)]
