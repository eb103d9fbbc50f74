"""`thoraxmae data ...`: phantom generation and store preparation.

    thoraxmae data phantom OUT --n 2000 --size 256 --seed 0
    thoraxmae data prepare SOURCE_DIR --format nih --out STORE [--size 768] [--workers N] [--strict]
    [--split-seed S]
        [--also FORMAT=DIR ...] [--keep-splits train[,val,test]]
    thoraxmae data verify STORE        # re-hash every shard against the manifest (datasets/store_verify.py)

--size is the largest shorter side a stored image keeps (aspect ratio kept, never upscaled; an image
that shrinks also keeps a half-resolution copy for the large crops). The default, 768, keeps 0.97 of the
reference's detail at the paper's smallest crops (fine-tuning crop scale 0.08 from 1024 px NIH
originals) and 1.0 from crop scale 0.1 up (datasets/resolution.py, benchmarks/crop_detail.py); it
takes 73.7 GB per 100,000 NIH images. The paper configs' stores are all prepared at the default: the
ChestX-ray14 fine-tuning store and the X-rays 0.3M pre-training store alike (pipeline studies search
pre-training crops down to 0.2, which need >= 451 px for 0.9 of the detail). CheXpert-small images
(320-390 px) are kept as they are.

A mixture: `--also FORMAT=DIR` (repeatable) loads one more source, and all are combined by
`concat_tables` into one store (labels matched by name; image and patient ids prefixed with the part's
name, two parts of one format become nih, nih-2, ...; the manifest's notes list the parts). The paper's
"X-rays 0.3M" pre-training store:

    thoraxmae data prepare /data/ChestX-ray14 --format nih --split-files SPLITS \
        --also chexpert=/data/CheXpert-v1.0-small --keep-splits train --out store/xrays03m

CheXpert has no official validation split (valid.csv is its test split), so when --keep-splits drops
"val" and no --val-fraction is given, CheXpert parts carve none: every CheXpert train frontal image is
kept (191,027), with NIH train_official (75,312): the paper's 266,339 images. NIH keeps its val out
(official or carved), as the fine-tuning store it is validated on does.

Source options go to every source of the run that accepts them (--split-seed 3 splits each of them
with seed 3); the ones naming a file of one dataset (--split-files, --csv, --labels-csv) go to the main
source only. An option that no source of the run accepts is an error. --harmonise applies to all.
--keep-splits keeps only the rows of the listed splits (applied to each part); a split it empties is
fine, an empty store is an error.

A DataError (bad folder, malformed CSV, unreadable image with --strict, an --out that cannot be written:
read-only, a file, a full disk, ...) is one line on stderr and exit code 2; a failed prepare leaves no
partial shard behind. Heavy imports stay inside the handlers so `thoraxmae --help` is instant.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thoraxmae.datasets.config import is_uri
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.resolution import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, check_size

FORMATS = ("nih", "chexpert", "mimic", "covidx", "dicom")
NO_OFFICIAL_VAL = ("chexpert",)  # formats whose val split is only ever carved from train
SPLIT_NAMES = ("train", "val", "test")  # datasets.table.SPLITS, kept here so --help imports nothing heavy
# Options that name a file of one dataset: they go to the main source only (--format, SOURCE_DIR).
MAIN_ONLY_OPTIONS = ("split_files", "csv", "labels_csv")
OPTION_FLAGS = {"frontal": "--all-views"}  # keyword -> flag, where the flag is not "--" + keyword
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
    r.add_argument("--out", required=True, type=_store_location,
                   help="store folder, or an object-store URI (s3://bucket/stores/nih768, gs://...): "
                        "prepared in "
                   "a temp folder, then uploaded")
    r.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"largest shorter side of a stored image in px, {MIN_SIZE}-{MAX_SIZE}; smaller "
                        f"images are kept as they are (default {DEFAULT_SIZE})")
    r.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding processes (default: CPU count, at most 8)")
    r.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    r.add_argument("--shard-size", type=int, default=1024, help="images per shard file (default 1024)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--also", action="append", default=[], metavar="FORMAT=DIR",
                   help="mix in one more source (repeatable), e.g. --also chexpert=/data/CheXpert-v1.0-small")
    r.add_argument("--keep-splits", metavar="SPLIT[,SPLIT]",
                   help="keep only the rows of these splits, e.g. train for a pre-training store")
    _source_options(r)
    r.set_defaults(func=_prepare)

    v = dsub.add_parser("verify", help="re-hash a store's shards against its manifest (bit-level check)",
                        description="Re-hash every shard of a prepared store and compare it with the sha256 "
                                    "its manifest recorded; an intact store is recorded as verified in this "
                                    "node's cache, so trainings on this node skip the check until a shard "
                                    "changes.")
    v.add_argument("store", type=_store_location, help="store folder or object-store URI (fetched into the "
                                                       "cache)")
    v.set_defaults(func=_verify)


def _source_options(r: argparse.ArgumentParser) -> None:
    """Source options; only those given are passed on (a format that lacks one names its valid options)."""
    g = r.add_argument_group("source options (see datasets/sources)",
                             "each goes to every source of the run that accepts it; --split-files, --csv and "
                             "--labels-csv go to the main source only")
    g.add_argument("--split-seed", type=int, help="seed of the patient-level val (and test) split")
    g.add_argument("--val-fraction", type=float, help="fraction of training patients moved to val")
    g.add_argument("--test-fraction", type=float, help="dicom: fraction of patients for test")
    g.add_argument("--split-files", type=Path, help="nih: folder with the paper's "
                                                    "train/val/test_official.txt")
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


def _parse_also(value: str) -> tuple[str, Path]:
    fmt, sep, folder = value.partition("=")
    fmt = fmt.strip()
    if not sep or not fmt or not folder.strip():
        raise DataError(f"--also {value!r}: expected FORMAT=DIR, e.g. --also "
                        "chexpert=/data/CheXpert-v1.0-small")
    if fmt not in FORMATS:
        raise DataError(f"--also {value!r}: unknown format {fmt!r}; expected one of {list(FORMATS)}")
    return fmt, Path(folder.strip())


def _parse_keep_splits(value: str) -> list[str]:
    splits = _split_list(value)
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown or not splits:
        raise DataError(f"--keep-splits {value!r}: unknown split name(s) {unknown or [value]}; expected a "
                        f"comma-separated subset of {','.join(SPLIT_NAMES)}, e.g. --keep-splits train")
    return splits


def _flag(option: str) -> str:
    return OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


def _source_plans(args: argparse.Namespace) -> list[tuple[str, Path, dict]]:
    """(format, folder, options) for the main source, then each --also source, with the options each
    accepts."""
    from thoraxmae.datasets.sources import source_options

    sources = [(args.fmt, args.source_dir)] + [_parse_also(v) for v in args.also]
    given = _options(args)
    accepts = {fmt: source_options(fmt) for fmt, _ in sources}
    for name in given:
        if name in MAIN_ONLY_OPTIONS and name not in accepts[args.fmt]:
            raise DataError(f"source option {name!r} ({_flag(name)}) names a file of the main source, and "
                            f"source {args.fmt!r} does not accept it; valid options: "
                            f"{list(accepts[args.fmt])}")
        if not any(name in a for a in accepts.values()):
            which = f"source {args.fmt!r}" if len(accepts) == 1 else f"any of the sources {list(accepts)}"
            valid = "; ".join(f"{f}: {list(a)}" for f, a in accepts.items())
            raise DataError(f"source option {name!r} ({_flag(name)}) is not accepted by {which}; valid "
                            f"options: {valid}")
    return [(fmt, root, {k: v for k, v in given.items()
                         if k in accepts[fmt] and (i == 0 or k not in MAIN_ONLY_OPTIONS)})
            for i, (fmt, root) in enumerate(sources)]


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


class ProgressBar:
    """A rich progress bar on stderr (CLI only: library code reports through callbacks). Call it as
    `bar(done, total)` (prepare_store's callback) or `bar.advance(n)` (generate_phantom's)."""

    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[ProgressBar | None]:
    """Yields a ProgressBar drawn while the block runs, or None when not `enabled`."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield ProgressBar(progress, progress.add_task(description, total=total))


def _phantom(args: argparse.Namespace) -> int:
    from rich.console import Console

    from thoraxmae.datasets.phantom import generate_phantom
    from thoraxmae.datasets.sources import load_source

    with progress_bar("phantom", args.n) as bar:
        generate_phantom(args.out, n=args.n, size=args.size, seed=args.seed, progress=bar.advance)
    table = load_source("nih", args.out)  # read back through the real NIH source
    console = Console()
    console.print(_summary(f"phantom {args.out} ({args.size} px, seed {args.seed})", table.split_counts(),
                           {s: table.positives(s) for s in table.split_counts()}))
    return 0


def _store_location(text: str) -> Path | str:
    """--out: a URI stays text (a Path would fold `s3://b` into `s3:/b`), anything else is a folder."""
    return text if is_uri(text) else Path(text)


def _prepare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from thoraxmae.datasets.remote import upload_store
    from thoraxmae.datasets.store import prepare_store

    check_size(args.size, "--size")  # before any source is read or pixel allocated
    if not is_uri(args.out):
        _check_out(args.out)
    table = _table(args)
    with contextlib.ExitStack() as stack:
        out = args.out
        if is_uri(args.out):  # prepared here, then uploaded (shards first, the manifest last)
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="thoraxmae-store-"))) / "store"
        with progress_bar(f"prepare {table.name}", len(table), enabled=not args.quiet) as bar:
            manifest = prepare_store(table, out, size=args.size, workers=args.workers, strict=args.strict,
                                     progress=bar, shard_size=args.shard_size)
        if is_uri(args.out):
            upload_store(out, args.out)
    console = Console()
    if "sources" in table.notes:
        console.print("mixture of " + ", ".join(f"{p['name']} ({p['format']} {p['dir']}: {p['images']} "
                                                "images)"
                                                for p in table.notes["sources"]),
                      markup=False, soft_wrap=True)
    sides = manifest["shorter_side"]
    console.print(_summary(f"store {args.out} (shorter side {sides['min']}-{sides['max']} px, "
                           f"{len(manifest['shards'])} shards)", manifest["counts"], manifest["positives"]))
    failed = manifest["failed"]
    if failed:
        console.print(f"[yellow]{len(failed)} image(s) could not be decoded and were skipped "
                      f"(all listed in {args.out}/manifest.json):[/yellow]", soft_wrap=True)
        for f in failed[:SHOWN_FAILURES]:
            console.print(f"  {f['reason']}", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print("no failed images")
    return 0


def _check_out(out: Path) -> None:
    """--out can take the store, checked before any source is read (a folder made for the check is
    removed)."""
    from thoraxmae.datasets.output import output_folder, remove_if_empty

    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        output_folder(out, "store folder (--out)")
    finally:
        remove_if_empty(*missing)


def _verify(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from thoraxmae.datasets.store import check_store, verify_store

    t0 = time.monotonic()
    content_hash = verify_store(args.store)
    seconds = time.monotonic() - t0
    manifest = check_store(args.store)
    Console().print(f"store {args.store}: {len(manifest['shards'])} shard(s), {manifest.get('images', '?')} "
                    f"images match the manifest's hashes (content hash {content_hash[:12]}; {seconds:.1f} s)",
                    markup=False, soft_wrap=True)
    return 0


def _table(args: argparse.Namespace):
    """The table to prepare: the main source, or the mixture with the --also sources; --keep-splits
    applied."""
    from thoraxmae.datasets.sources import load_source
    from thoraxmae.datasets.table import concat_tables, keep_splits

    plans = _source_plans(args)
    keep = _parse_keep_splits(args.keep_splits) if args.keep_splits is not None else None
    if keep is not None and "val" not in keep and args.val_fraction is None:  # see the module docstring
        plans = [(fmt, root, {**opts, "val_fraction": 0.0} if fmt in NO_OFFICIAL_VAL else opts)
                 for fmt, root, opts in plans]
    tables = [load_source(fmt, root, harmonise=args.harmonise, **opts) for fmt, root, opts in plans]
    held = {s: sum(t.split_counts()[s] for t in tables) for s in SPLIT_NAMES}
    if keep is not None:
        tables = [keep_splits(t, keep) for t in tables]
        if sum(len(t) for t in tables) == 0:
            raise DataError(f"--keep-splits {args.keep_splits}: no image is in split(s) {keep} (the "
                            "source(s) hold "
                            + ", ".join(f"{s} {n}" for s, n in held.items()) + "); nothing to prepare")
    if len(tables) == 1:
        return tables[0]
    table = concat_tables(tables)
    table.notes["sources"] = [{"name": part, "format": fmt, "dir": str(root.resolve()), "images": len(t),
                               "counts": t.split_counts()}
                              for part, (fmt, root, _), t
                              in zip(table.notes["parts"], plans, tables, strict=True)]
    if keep is not None:
        table.notes["kept_splits"] = [s for s in SPLIT_NAMES if s in keep]
    return table


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
