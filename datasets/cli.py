"""`thoraxmae data ...`: phantom generation and store preparation.

    thoraxmae data phantom OUT --n 2000 --size 256 --seed 0
    thoraxmae data prepare SOURCE_DIR --format nih --out STORE --size 256 [--workers N] [--strict] [--split-seed S]

A DataError (bad folder, malformed CSV, unreadable image with --strict, ...) is one line on stderr and
exit code 2. Heavy imports stay inside the handlers so `thoraxmae --help` is instant.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from datasets.errors import DataError

FORMATS = ("nih", "chexpert", "mimic", "covidx", "dicom")
SHOWN_FAILURES = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate phantom data, prepare a store")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    q = dsub.add_parser("phantom", help="write a synthetic ChestX-ray14 set in the real NIH layout")
    q.add_argument("out", type=Path, help="output folder")
    q.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    q.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_phantom)

    r = dsub.add_parser("prepare", help="decode a dataset once into a store of resized uint8 shards")
    r.add_argument("source_dir", type=Path, help="dataset folder")
    r.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    r.add_argument("--out", required=True, type=Path, help="store folder")
    r.add_argument("--size", type=int, default=256, help="store image side in pixels (default 256)")
    r.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding processes (default: CPU count, at most 8)")
    r.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    r.add_argument("--shard-size", type=int, default=1024, help="images per shard file (default 1024)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _source_options(r)
    r.set_defaults(func=_prepare)


def _source_options(r: argparse.ArgumentParser) -> None:
    """Source options; only those given are passed on (a format that lacks one names its valid options)."""
    g = r.add_argument_group("source options (see datasets/sources)")
    g.add_argument("--split-seed", type=int, help="seed of the patient-level val (and test) split")
    g.add_argument("--val-fraction", type=float, help="fraction of training patients moved to val")
    g.add_argument("--test-fraction", type=float, help="dicom: fraction of patients for test")
    g.add_argument("--split-files", type=Path, help="nih: folder with the paper's train/val/test_official.txt")
    g.add_argument("--missing", choices=("error", "skip"), help="listed images absent on disk")
    g.add_argument("--csv", type=Path, help="nih: the Data_Entry csv")
    g.add_argument("--labels-csv", type=Path, help="dicom: labels csv")
    g.add_argument("--labels", help="chexpert: 5task | 14label | comma-separated names")
    g.add_argument("--uncertainty", help="chexpert/mimic: ignore | zeros | ones, or LABEL=POLICY,...")
    g.add_argument("--views", help="mimic: comma-separated view positions (default AP,PA)")
    g.add_argument("--version", help="covidx: dataset version (default 9A)")
    g.add_argument("--all-views", action="store_true", help="chexpert: keep lateral images too")
    g.add_argument("--harmonise", action="store_true", help="rename labels to the NIH vocabulary where equal")


def _options(args: argparse.Namespace) -> dict:
    out: dict = {}
    for name in ("split_seed", "val_fraction", "test_fraction", "split_files", "missing", "csv", "labels_csv",
                 "version"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    if args.labels is not None:
        out["labels"] = args.labels if args.labels in ("5task", "14label") else _split_list(args.labels)
    if args.uncertainty is not None:
        u = args.uncertainty
        out["uncertainty"] = dict(p.split("=", 1) for p in _split_list(u)) if "=" in u else u
    if args.views is not None:
        out["views"] = tuple(_split_list(args.views))
    if args.all_views:
        out["frontal"] = False
    return out


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def user_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """DataError -> one line on stderr, exit code 2 (datasets does not import study's twin of this)."""
    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper


@user_errors
def _phantom(args: argparse.Namespace) -> int:
    from rich.console import Console

    from datasets.phantom import generate_phantom
    from datasets.sources import load_source
    from datasets.store_progress import progress_bar

    with progress_bar(True, "phantom", args.n) as advance:
        generate_phantom(args.out, n=args.n, size=args.size, seed=args.seed, progress=advance)
    table = load_source("nih", args.out)  # read back through the real NIH source
    console = Console()
    console.print(_summary(f"phantom {args.out} ({args.size} px, seed {args.seed})", table.split_counts(),
                           {s: table.positives(s) for s in table.split_counts()}))
    return 0


@user_errors
def _prepare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from datasets.sources import load_source
    from datasets.store import prepare_store

    table = load_source(args.fmt, args.source_dir, harmonise=args.harmonise, **_options(args))
    manifest = prepare_store(table, args.out, size=args.size, workers=args.workers, strict=args.strict,
                             progress=not args.quiet, shard_size=args.shard_size)
    console = Console()
    console.print(_summary(f"store {args.out} ({manifest['size']} px, {len(manifest['shards'])} shards)",
                           manifest["counts"], manifest["positives"]))
    failed = manifest["failed"]
    if failed:
        console.print(f"[yellow]{len(failed)} image(s) could not be decoded and were skipped "
                      f"(all listed in {args.out / 'manifest.json'}):[/yellow]", soft_wrap=True)
        for f in failed[:SHOWN_FAILURES]:
            console.print(f"  {f['reason']}", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print("no failed images")
    return 0


def _summary(title: str, counts: dict[str, int], positives: dict[str, dict[str, int]]):
    """A rich table: images per split, then positives per label per split."""
    from rich.table import Table

    splits = list(counts)
    t = Table(title=title)
    t.add_column("")
    for s in splits:
        t.add_column(s, justify="right")
    t.add_row("images", *(str(counts[s]) for s in splits), style="bold")
    labels = list(next(iter(positives.values()))) if positives else []
    for name in labels:
        t.add_row(name, *(str(positives[s][name]) for s in splits))
    return t
