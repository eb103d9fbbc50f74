"""`thoraxmae pretrain|finetune SPEC.yaml`: one training run, no search."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    for name in ("pretrain", "finetune"):
        q = sub.add_parser(name, help=f"one {name} run, no search (not yet available)")
        q.set_defaults(func=lambda a: print("not yet available") or 0)
