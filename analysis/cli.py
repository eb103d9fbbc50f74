"""`thoraxmae report NAME --out DIR`."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("report", help="recipe report from a study's MLflow runs (not yet available)")
    q.set_defaults(func=lambda a: print("not yet available") or 0)
