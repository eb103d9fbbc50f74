"""The one CLI, `thoraxmae`. Each package registers its own subcommands; heavy imports stay lazy
so `thoraxmae --help` is instant."""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from analysis import cli as analysis_cli
    from datasets import cli as data_cli
    from study import cli_demo, cli_study, cli_train

    parser = argparse.ArgumentParser(
        prog="thoraxmae",
        description="Find and explain ViT training recipes for chest X-rays with Ray Tune, Optuna and MLflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_cli.register(sub)
    cli_train.register(sub)
    cli_study.register(sub)
    analysis_cli.register(sub)
    cli_demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
