"""`thoraxmae pretrain|finetune SPEC.yaml [--set key=value]`: one training run, no search.

Uses the spec's `pretrain` or `finetune` section as written (a search space, if any, is ignored),
runs it through Ray Train on RAY_ADDRESS or a local Ray, and logs it to MLflow as role=run.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    for phase in ("pretrain", "finetune"):
        q = sub.add_parser(phase, help=f"one {phase} run with the spec's fixed values (no search)")
        q.add_argument("spec", type=Path, help="spec (YAML) with a `" + phase + "` section")
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override a spec field, e.g. --set {phase}.epochs=2 (repeatable)")
        q.set_defaults(func=cmd_train, phase=phase)


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from thoraxmae.cli.study import warn_store_detail
    from thoraxmae.study import schema
    from thoraxmae.study.errors import SpecError
    from thoraxmae.study.run.ray_local import init_ray
    from thoraxmae.study.run.single_run import run_single
    from thoraxmae.study.spec.load import load_spec
    from thoraxmae.study.tracking.uri import check_tracking_uri, mlflow_cli_defaults

    mlflow_cli_defaults()
    spec = load_spec(args.spec, args.overrides)
    if getattr(spec, args.phase) is None:
        raise SpecError(f"{args.spec}: {args.phase}: this spec (stage {spec.stage}) has no {args.phase} "
                        "section")
    check_tracking_uri(spec.tracking.uri, write=True)  # before Ray starts
    warn_store_detail(spec, (args.phase,), searched=False)  # the run ignores the search space
    console = Console()
    seconds = init_ray()
    console.print(f"Ray ready in {seconds:.1f} s; {args.phase} run of [bold]{spec.name}[/], "
                  f"tracking {spec.tracking.uri}")
    run_id, result = run_single(spec, args.phase)
    metrics = result.metrics or {}
    shown = [schema.M_PRETRAIN_LOSS, schema.M_VAL_MAUC, schema.M_TEST_MAUC, schema.M_TEST_MAUC_CI_LOW,
             schema.M_TEST_MAUC_CI_HIGH, schema.M_COST_CPU_HOURS, schema.M_COST_GPU_HOURS]
    for key in shown:
        if key in metrics:
            console.print(f"{key} = {metrics[key]:.4f}")
    console.print(f"MLflow run {run_id}; checkpoint {result.checkpoint.path if result.checkpoint else '-'}")
    return 0
