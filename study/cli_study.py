"""`thoraxmae study run|submit|status|resume` and `thoraxmae ui`."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run, submit, inspect and resume studies (not yet available)")
    p.set_defaults(func=lambda a: print("not yet available") or 0)
    q = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 (not yet available)")
    q.set_defaults(func=lambda a: print("not yet available") or 0)
