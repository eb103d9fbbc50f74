"""`thoraxmae data ...`: phantom generation and store preparation."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate phantom data, prepare a store")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name in ("phantom", "prepare"):
        q = dsub.add_parser(name, help=f"{name} (not yet available)")
        q.set_defaults(func=_todo)


def _todo(args: argparse.Namespace) -> int:
    print("not yet available")
    return 0
