"""`thoraxmae study confirm NAME [--top K] [--seeds N] [--pretrain-seeds P] [--reference FILE] [--replace]`:
re-run the chosen recipes and a reference with fresh, shared seeds (study/run/confirm.py), so the report's
recipe rests on paired replicates. The recipes are chosen here, where analysis and study meet:
analysis/candidates.py ranks the study's scored trials by a smoothed estimate and always includes the top-k
median recipe (issue 21: a raw top-1 carries the winner's curse). Defaults (top 3 x 3 seeds) come from
benchmarks/search_quality.py. Run again with other sizes, it adds the missing runs to the confirmation;
`--replace` removes the confirmation (its runs and Tune folders) first."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TOP, DEFAULT_SEEDS = 3, 3  # = ConfirmConfig's defaults (study/spec/model.py)
TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)"


def register(ssub: argparse._SubParsersAction) -> None:
    from thoraxmae.study.tracking.lookup import storage_arg

    q = ssub.add_parser("confirm",
                        help="re-run the top-k recipes and a reference with n fresh seeds each (paired)")
    q.add_argument("name")
    q.add_argument("--top", type=int, default=None,
                   help="recipes to confirm: the top-k median, then the best smoothed estimates "
                   f"(default: spec, else {DEFAULT_TOP})")
    q.add_argument("--seeds", type=int, default=None,
                   help=f"seeds per recipe, shared by all (default: spec, else {DEFAULT_SEEDS})")
    q.add_argument("--reference", type=Path, default=None, metavar="YAML",
                   help="reference recipe (knob: value lines; default: the paper's)")
    q.add_argument("--pretrain-seeds", type=int, default=None, metavar="P",
                   help="pipeline studies: pre-training seeds per recipe, shared by all; 1 reuses the "
                        "study's pre-trainings (default: spec, else 1)")
    q.add_argument("--replace", action="store_true",
                   help="remove the study's existing confirmation (runs and Tune folders) and run this one")
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
    pretrain_seeds = args.pretrain_seeds if args.pretrain_seeds is not None else \
        (cfg.pretrain_seeds if cfg else 1)
    return confirm_and_print(spec, top, seeds, reference, pretrain_seeds, replace=args.replace)


def confirm_and_print(spec, top: int, seeds: int, reference: Path | None, pretrain_seeds: int | None = None,
                      replace: bool = False) -> int:
    """Run the confirmation on Ray (resuming and extending an earlier one) and print what this request came
    to; exit status 0 when every requested run finished."""
    from rich.console import Console

    from thoraxmae.cli.progress import StudyProgress
    from thoraxmae.study import schema
    from thoraxmae.study.run.confirm import check_sizes, confirm_points, run_confirm
    from thoraxmae.study.run.confirm_parts import check_reference, confirm_dir, remove_confirmation
    from thoraxmae.study.run.ray_local import init_ray

    if pretrain_seeds is None:
        pretrain_seeds = spec.confirm.pretrain_seeds if spec.confirm else 1
    check_sizes(top, seeds, pretrain_seeds, spec)  # before Ray starts
    console = Console()
    study = load_study_record(spec)
    recipes = choose_recipes(spec, top, study)
    points = confirm_points(spec, recipes, seeds, reference, pretrain_seeds)  # every refusal before Ray
    earlier = [r.run_id for r in study.confirm]
    if replace:
        remove_confirmation(spec, earlier)
        console.print(f"removed the earlier confirmation of {spec.name}: {len(earlier)} run(s), "
                      f"{confirm_dir(spec)}")
        earlier = []
    elif earlier:
        check_reference(spec, points, [earlier_point(spec, r) for r in study.confirm
                                       if r.recipe == schema.RECIPE_REFERENCE])
    console.print(request_line(spec.name, top, recipes, points, seeds, pretrain_seeds, len(earlier)))
    init_ray()
    result = run_confirm(spec, recipes, seeds, reference, callbacks=[StudyProgress(spec)],
                         pretrain_seeds=pretrain_seeds)
    finished, failed = result.status(spec)
    console.print(f"confirmation: {finished} of {len(result.requested)} requested runs finished"
                  + (f", {failed} failed" if failed else "")
                  + f" ({result.new} run now, {len(result.requested) - result.new} from earlier)"
                  + f"; `thoraxmae report {spec.name}` shows the verdicts")
    return 0 if finished == len(result.requested) else 1


def request_line(name: str, top: int, recipes: list, points: list[dict], seeds: int, pretrain_seeds: int,
                 earlier: int) -> str:
    """What this request runs, in one line: the recipes (`2 of 5` when the study has fewer candidates than
    asked for), the seeds, the runs, and what an earlier confirmation already holds."""
    from thoraxmae.study.spec.plan import CONFIRM_RECIPE

    labels = [r.label for r in recipes if any(p[CONFIRM_RECIPE] == r.label for p in points)]
    shown = f"{len(recipes)} of {top} recipes asked for (the study has no more candidates): " \
        if len(recipes) < top else ""
    pretraining = f" x {pretrain_seeds} pre-training seeds" if pretrain_seeds > 1 else ""
    return (f"confirming study [bold]{name}[/]: {shown}{', '.join(labels) or '(none)'} + reference, "
            f"{seeds} seeds{pretraining} each: {len(points)} runs"
            + (f"; the runs an earlier confirmation holds ({earlier}) are not repeated" if earlier else ""))


def load_study_record(spec):
    from thoraxmae.analysis.load import load_study

    return load_study(spec.name, spec.tracking.uri)


def earlier_point(spec, record) -> dict:
    """An earlier confirmation run (analysis.load.ConfirmRecord) as the point it ran: its recipe and knobs."""
    from thoraxmae.study.run.confirm import parse_param
    from thoraxmae.study.spec.plan import CONFIRM_RECIPE

    return {**{k: parse_param(d, record.params.get(k)) for k, d in spec.search.space.items()},
            CONFIRM_RECIPE: record.recipe}


def choose_recipes(spec, top: int, study=None) -> list:
    """The `top` recipes to confirm (analysis/candidates.py), read from the study's MLflow runs."""
    from thoraxmae.analysis.candidates import study_candidates
    from thoraxmae.study.run.confirm import ConfirmRecipe

    study = study if study is not None else load_study_record(spec)
    return [ConfirmRecipe(c.label, c.run_id, c.params) for c in study_candidates(study, top)]
