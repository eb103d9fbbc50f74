"""`thoraxmae demo`: the whole product on the embedded default."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("demo", help="phantom data -> store -> pipeline study -> report (not yet available)")
    q.set_defaults(func=lambda a: print("thoraxmae demo: not yet available (waiting on the demo issue)") or 0)
