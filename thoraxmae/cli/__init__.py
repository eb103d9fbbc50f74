"""The one CLI, `thoraxmae`, and its one error boundary.

Each package registers its own subcommands; heavy imports stay lazy so `thoraxmae --help` is instant.
Every package's boundary error (DataError, CheckpointError, SpecError, ReportError) becomes one line on
stderr and exit code 2 here, and nowhere else.
"""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from thoraxmae import demo
    from thoraxmae.analysis import cli as analysis_cli
    from thoraxmae.cli import evaluate as cli_evaluate
    from thoraxmae.cli import study as cli_study
    from thoraxmae.cli import train as cli_train
    from thoraxmae.datasets import cli as data_cli

    parser = argparse.ArgumentParser(
        prog="thoraxmae",
        description="Find and explain ViT training recipes for chest X-rays with Ray Tune, Optuna and "
                    "MLflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.register(sub)
    cli_train.register(sub)
    cli_evaluate.register(sub)
    cli_study.register(sub)
    analysis_cli.register(sub)
    demo.register(sub)
    return parser


def user_error_types() -> tuple[type[Exception], ...]:
    """The four packages' boundary errors: a bad file, field, row or name the user can fix."""
    from thoraxmae.analysis.errors import ReportError
    from thoraxmae.datasets.errors import DataError
    from thoraxmae.study.errors import SpecError
    from thoraxmae.trainers.errors import CheckpointError

    return DataError, CheckpointError, SpecError, ReportError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except user_error_types() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
