"""The prepared store: every image decoded once, its shorter side fitted to at most `size` px (aspect ratio
kept, never upscaled), kept as uint8 in Arrow IPC shards; an image that had to shrink also keeps a copy
at half that resolution, which the transforms read for the crops that need no more (datasets.store_shards).

    manifest = prepare_store(load_source("nih", root), Path("store/nih768"), size=768, workers=8)
    store = open_store("store/nih768")
    store.image(store.split_indices("train")[0])  # uint8 [768, 768], a zero-copy view of the file

Layout: `manifest.json` + `shards/shard-00000.arrow`, ... (datasets.store_shards). Preparing is
resumable: a shard whose inputs (rows, labels, size) are unchanged, whose images all decoded and whose
contents still hash to the value recorded when it was written is kept; the others (missing, stale,
damaged) are (re)built. The store's content hash is computed from the shards' contents.
Images that cannot be decoded are skipped and listed in the manifest (`strict=True` stops at the first).
Readers memory-map the shards, so any number of processes can share one store. Progress goes to an
optional `progress(done, total)` callback (the CLI draws the bar); nothing here prints.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thoraxmae.datasets import store_verify
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.output import output_folder, remove_if_empty
from thoraxmae.datasets.output import reason as write_failure
from thoraxmae.datasets.remote import local_store
from thoraxmae.datasets.resolution import DEFAULT_SIZE, check_size
from thoraxmae.datasets.store_pool import worker_pool
from thoraxmae.datasets.store_read import MANIFEST, Store, check_store, open_store
from thoraxmae.datasets.store_shards import (
    FORMAT_VERSION,
    READERS,
    RESIZE_NOTE,
    ShardData,
    decode_chunk,
    open_shard,
    shard_digest,
    shard_meta,
    write_shard,
)
from thoraxmae.datasets.table import SPLITS, SourceTable

log = logging.getLogger(__name__)

SHARD_DIR = "shards"
CHUNK = 32  # images per pool task
Progress = Callable[[int, int], None]  # progress(images done, images in total)

__all__ = ["FORMAT_VERSION", "MANIFEST", "Progress", "Store", "check_store", "open_store", "prepare_store",
           "verify_store"]


@dataclass
class ShardPlan:
    index: int
    rows: np.ndarray  # row positions in the table
    key: str  # hash of the inputs; a complete shard with the same key is reused

    @property
    def file(self) -> str:
        return f"{SHARD_DIR}/shard-{self.index:05d}.arrow"


def prepare_store(table: SourceTable, out: Path, size: int = DEFAULT_SIZE, workers: int = 1,
                  strict: bool = False,
                  progress: Progress | bool | None = None, shard_size: int = 1024) -> dict:
    """Decode every image of `table` once into a store at `out`; returns the manifest (also manifest.json).

    progress: called as progress(done, total) after each decoded chunk (a bool is accepted and means
    no callback, for callers written when this drew its own bar).
    """
    _check_args(table, size, workers, shard_size)
    table.validate()
    report: Progress = progress if callable(progress) else (lambda done, total: None)
    out = Path(out)
    created = not out.exists()
    output_folder(out, "store folder")
    try:
        output_folder(out / SHARD_DIR, "store folder")
        manifest = _write_store(table, out, size, workers, strict, report, shard_size)
    except BaseException:
        if created:  # a failed first run leaves no empty folder behind (complete shards are kept, to resume)
            remove_if_empty(out / SHARD_DIR, out)
        raise
    if manifest["failed"]:
        log.warning("%s: %d image(s) could not be decoded and were skipped, e.g. "
                    "%s", out, len(manifest["failed"]),
                    manifest["failed"][0]["reason"])
    if manifest["images"] == 0:  # every image failed
        raise DataError(f"{out}: none of the {len(table)} images could be decoded, e.g. "
                        f"{manifest['failed'][0]['reason']}")
    return manifest


def _write_store(table: SourceTable, out: Path, size: int, workers: int, strict: bool, report: Progress,
                 shard_size: int) -> dict:
    """The shards not already complete, then the manifest (last: a store without one is incomplete)."""
    plans = _plan(table, size, shard_size)
    _remove_stale(out, {p.file for p in plans})
    digests = {p.index: d for p in plans if (d := _reusable(out / p.file, p)) is not None}
    todo = [p for p in plans if p.index not in digests]
    if digests:
        log.info("%s: %d of %d shards already complete; preparing the other "
                 "%d", out, len(digests), len(plans),
                 len(todo))
    done = len(table) - sum(len(p.rows) for p in todo)
    report(done, len(table))
    for plan, data in _decode_shards(table, todo, size, workers, strict):
        digests[plan.index] = write_shard(out / plan.file, data, plan.key)["sha256"]
        done += len(plan.rows)
        report(done, len(table))
    manifest = _manifest(table, out, plans, size, digests)
    tmp = out / (MANIFEST + ".tmp")
    try:
        tmp.write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(tmp, out / MANIFEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{out / MANIFEST}: cannot write the store manifest ({write_failure(exc)})") from None
    return manifest


def verify_store(path: Path | str) -> str:
    """Re-hash every shard of a store from its file; returns the content hash (the manifest's when intact).
    A shard whose contents differ from the hash recorded when it was written is a DataError naming it.
    A URI's store is fetched into the node's cache first (datasets.remote) and its cached copy re-hashed.
    An intact store is recorded as verified in the node cache (datasets.store_verify)."""
    path = local_store(path)
    manifest = check_store(path)
    digests = store_verify.hash_shards(path, manifest)
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next open a re-hash
        store_verify.record(path, manifest)
    return _content_hash(manifest["size"], manifest["label_names"], digests)


def _check_args(table: SourceTable, size: int, workers: int, shard_size: int) -> None:
    check_size(size)
    if len(table) == 0:
        raise DataError(f"{table.name}: the table has no rows; nothing to prepare")
    if workers < 1:
        raise DataError(f"prepare_store: workers={workers} must be >= 1")
    if shard_size < 1:
        raise DataError(f"prepare_store: shard_size={shard_size} must be >= 1")
    bad = sorted(set(table.frame["reader"]) - set(READERS))
    if bad:
        row = int(np.flatnonzero(table.frame["reader"].isin(bad).to_numpy())[0])
        raise DataError(f"{table.name}: unknown reader {bad[0]!r} (row {row}, "
                        f"{table.frame['path'].iloc[row]}); expected one of {READERS}")


def _reusable(path: Path, plan: ShardPlan) -> str | None:
    """The content hash of a shard that can be kept: same inputs, every image decoded (failures are
    retried), and its contents still hash to the value recorded when it was written."""
    meta = shard_meta(path)
    if meta is None or meta.get("key") != plan.key or meta.get("failed"):
        return None
    try:
        digest = shard_digest(open_shard(path))
    except DataError:
        digest = None
    if digest != meta.get("sha256"):
        log.warning("%s: contents do not match the hash recorded when it was written (damaged); rebuilding "
                    "it", path)
        return None
    return digest


def _plan(table: SourceTable, size: int, shard_size: int) -> list[ShardPlan]:
    f = table.frame
    plans = []
    for index, start in enumerate(range(0, len(table), shard_size)):
        rows = np.arange(start, min(start + shard_size, len(table)))
        h = hashlib.sha256(f"{FORMAT_VERSION}|{size}|{'|'.join(table.label_names)}|{table.task}".encode())
        for col in ("image_id", "path", "patient_id", "split", "reader"):
            h.update("\n".join(f[col].iloc[rows].astype(str)).encode())
        h.update(table.labels[rows].tobytes())
        h.update(table.mask[rows].tobytes())
        plans.append(ShardPlan(index, rows, h.hexdigest()))
    return plans


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Shard files of an earlier, longer table and temp files of an interrupted run."""
    for path in (out / SHARD_DIR).iterdir():
        if f"{SHARD_DIR}/{path.name}" not in keep and (path.suffix in (".arrow", ".tmp")):
            path.unlink()


def _decode_shards(table: SourceTable, plans: list[ShardPlan], size: int, workers: int,
                   strict: bool) -> Iterator[tuple[ShardPlan, ShardData]]:
    """Decode the planned shards in order (in a process pool when workers > 1); yields each full shard."""
    paths = table.frame["path"].astype(str).to_numpy()
    readers = table.frame["reader"].astype(str).to_numpy()
    tasks = [(plan, rows) for plan in plans
             for rows in np.array_split(plan.rows, -(-len(plan.rows) // CHUNK))]
    pool = worker_pool(workers) if workers > 1 and tasks else None
    try:
        current, parts = None, []
        for (plan, rows), (pixels, failed) in _run(tasks, paths, readers, size, pool, workers):
            if strict and failed:
                raise DataError(failed[0][1] + " (strict: stopping at the first unreadable image)")
            if current is not None and plan is not current:
                yield current, _assemble(table, current, parts)
                parts = []
            current = plan
            parts.append((rows, pixels, failed))
        if current is not None:
            yield current, _assemble(table, current, parts)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _run(tasks, paths, readers, size, pool: ProcessPoolExecutor | None, workers: int) -> Iterator:
    """Results of decode_chunk in task order; at most 4 tasks per worker in flight."""
    if pool is None:
        for task in tasks:
            rows = task[1]
            yield task, decode_chunk(paths[rows].tolist(), readers[rows].tolist(), size)
        return
    pending: deque[tuple[tuple, Future]] = deque()
    for task in tasks:
        rows = task[1]
        pending.append((task, pool.submit(decode_chunk, paths[rows].tolist(), readers[rows].tolist(), size)))
        if len(pending) >= 4 * workers:
            done, fut = pending.popleft()
            yield done, fut.result()
    while pending:
        done, fut = pending.popleft()
        yield done, fut.result()


def _assemble(table: SourceTable, plan: ShardPlan, parts: list) -> ShardData:
    rows = np.concatenate([r for r, _, _ in parts])
    ok = np.ones(len(rows), bool)
    failed, offset = [], 0
    f = table.frame
    for r, _, fails in parts:
        for i, reason in fails:
            ok[offset + i] = False
            failed.append({"image_id": str(f["image_id"].iloc[r[i]]), "path": str(f["path"].iloc[r[i]]),
                           "reason": reason})
        offset += len(r)
    kept = rows[ok]
    pixels = [p for _, chunk, _ in parts for p in chunk]
    return ShardData(pixels, table.labels[kept], table.mask[kept],
                     f["image_id"].iloc[kept].astype(str).tolist(),
                     f["patient_id"].iloc[kept].astype(str).tolist(),
                     f["split"].iloc[kept].astype(str).tolist(),
                     failed)


def _content_hash(size: int, label_names, digests: dict[int, str]) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}|{size}|{'|'.join(label_names)}".encode())
    for index in sorted(digests):
        h.update(digests[index].encode())
    return h.hexdigest()


def _manifest(table: SourceTable, out: Path, plans: list[ShardPlan], size: int,
              digests: dict[int, str]) -> dict:
    """Counts and positives are read back from the shards, so they describe what is stored."""
    shards, failed, shorter, halves = [], [], [], 0
    counts = dict.fromkeys(SPLITS, 0)
    positives = {s: dict.fromkeys(table.label_names, 0) for s in SPLITS}
    k = len(table.label_names)
    for plan in plans:
        view = open_shard(out / plan.file)
        split = np.asarray(view.table.column("split").to_pylist(), dtype=object)
        labels = np.asarray(view.table.column("labels").combine_chunks().flatten(), np.float32).reshape(-1, k)
        mask = np.asarray(view.table.column("mask").combine_chunks().flatten(), np.uint8).reshape(-1, k)
        for s in SPLITS:
            rows = split == s
            counts[s] += int(rows.sum())
            for name, c in zip(table.label_names, (labels[rows] * mask[rows]).sum(0), strict=True):
                positives[s][name] += int(c)
        shards.append({"file": plan.file, "rows": len(view), "bytes": (out / plan.file).stat().st_size,
                       "sha256": digests[plan.index]})
        shorter.append(np.minimum(view.heights, view.widths))
        halves += int(np.count_nonzero(view.halves.sides[:, 0]))
        failed += view.meta["failed"]
    sides = np.concatenate(shorter) if shorter else np.zeros(0, np.int32)
    return {"format_version": FORMAT_VERSION, "source": table.name, "size": size, "resize": RESIZE_NOTE,
            "shorter_side": {"min": int(sides.min()), "max": int(sides.max())} if len(sides) else None,
            "half_copies": halves,
            "label_names": list(table.label_names), "task": table.task, "images": sum(counts.values()),
            "counts": counts, "positives": positives,
            "content_hash": _content_hash(size, table.label_names, digests), "shards": shards,
            "failed": failed, "notes": table.notes}
