"""`thoraxmae report NAME [--tracking-uri URI] --out DIR`: the recipe report of a study."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("report", help="recipe report from a study's MLflow runs (HTML + Markdown + PNG "
                                      "plots)",
                       description="Read a study's trials from MLflow and write report.html, report.md, "
                                   "recipe.yaml, trials.parquet and the PNG plots into --out; the folder is "
                                   "also logged to the study's parent run as `report/`.")
    q.add_argument("name", help="study name (the MLflow experiment named after it)")
    q.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    q.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: ./report)")
    q.add_argument("--bootstrap", type=_count, default=40, metavar="N",
                   help="bootstrap resamples for the importance rank-stability check (default 40; 0: no "
                        "check)")
    q.add_argument("--top-fraction", type=_fraction, default=0.2, metavar="F",
                   help="share of the completed trials the recipe is distilled from (default 0.2, at least "
                        "3)")
    q.add_argument("--reference", type=Path, default=None, metavar="YAML",
                   help="reference recipe to compare with (knob: value, or a spec's sections; default: the "
                        "paper's)")
    q.add_argument("--no-log", dest="log_artifacts", action="store_false",
                   help="do not log the report folder to the study's parent run")
    q.set_defaults(func=cmd_report)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError("expected a share of the completed trials in (0, 1], e.g. 0.2; got "
                                         f"{text!r}")
    return value


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from thoraxmae.analysis.load import default_tracking_uri
    from thoraxmae.analysis.recipe import load_reference
    from thoraxmae.analysis.report import build_report
    from thoraxmae.study.tracking.uri import mlflow_cli_defaults

    mlflow_cli_defaults()  # no telemetry (README "Security defaults"), unless the user asked for it
    console = Console(stderr=True)
    uri = args.tracking_uri or default_tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress line instead
    reference = load_reference(args.reference) if args.reference else None
    with Progress(TextColumn("reading MLflow: {task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(args.name, total=None)

        def progress(done: int, total: int, what: str) -> None:
            what = "all trials read; analysing" if done == total else what
            bar.update(task, completed=done, total=total, description=what)

        result = build_report(args.name, uri, args.out, n_bootstrap=args.bootstrap,
                              top_fraction=args.top_fraction, log_artifacts=args.log_artifacts,
                              reference=reference, reference_name=str(args.reference) if reference else None,
                              progress=progress)
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from thoraxmae.analysis.claims import headline, spread_text
    from thoraxmae.analysis.pretrain_section import summary_items
    from thoraxmae.analysis.tables import fmt
    from thoraxmae.study.tracking.links import is_server, trials_url

    a = result.analysis
    console = Console()
    if a.recipe is not None:
        table = Table(title=f"recipe of study {result.study} ({a.study.metric}, {a.study.mode})")
        for col in ("knob", "recommended", "top-k range", "best trial"):
            table.add_column(col)
        for k in a.recipe.knobs:
            table.add_row(k.knob, fmt(k.value), spread_text(k, a.recipe.confidence.k), fmt(k.best_value))
        console.print(table)
    for line in [*summary_items(a), *headline(a)]:
        console.print(f"- {escape(line.replace('**', ''))}")
    console.print(f"report: {result.html}")
    if is_server(a.study.tracking_uri):  # the server serves the UI: its trials table
        print("trials: "
              f"{trials_url(a.study.tracking_uri, a.study.experiment_id, a.study.metric, a.study.mode)}",
              flush=True)
    if result.recipe_yaml is not None:
        console.print(f"recipe: {result.recipe_yaml}")
    if result.logged_to_run:
        console.print(f"logged to MLflow run {result.logged_to_run} under report/")
