"""The prepared store: every image decoded once, squared to `size` px, kept as uint8 in Arrow IPC shards.

    manifest = prepare_store(load_source("nih", root), Path("store/nih256"), size=256, workers=8)
    store = open_store("store/nih256")
    store.image(store.split_indices("train")[0])  # uint8 [256, 256], a zero-copy view of the file

Layout: `manifest.json` + `shards/shard-00000.arrow`, ... (datasets.store_shards). Preparing is
resumable: a shard whose file is complete, whose inputs (rows, labels, size) are unchanged and whose
images all decoded is kept; the others are (re)built.
Images that cannot be decoded are skipped and listed in the manifest (`strict=True` stops at the first).
Readers memory-map the shards, so any number of processes can share one store.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.store_progress import progress_bar
from thoraxmae.datasets.store_read import MANIFEST, Store, open_store
from thoraxmae.datasets.store_shards import (
    FORMAT_VERSION,
    READERS,
    RESIZE_NOTE,
    ShardData,
    decode_chunk,
    open_shard,
    shard_meta,
    write_shard,
)
from thoraxmae.datasets.table import SPLITS, SourceTable

log = logging.getLogger(__name__)

SHARD_DIR = "shards"
CHUNK = 32  # images per pool task

__all__ = ["FORMAT_VERSION", "MANIFEST", "Store", "open_store", "prepare_store"]


@dataclass
class ShardPlan:
    index: int
    rows: np.ndarray  # row positions in the table
    key: str  # hash of the inputs; a complete shard with the same key is reused

    @property
    def file(self) -> str:
        return f"{SHARD_DIR}/shard-{self.index:05d}.arrow"


def prepare_store(table: SourceTable, out: Path, size: int = 256, workers: int = 1, strict: bool = False,
                  progress: bool = True, shard_size: int = 1024) -> dict:
    """Decode every image of `table` once into a store at `out`; returns the manifest (also manifest.json)."""
    table.validate()
    _check_args(table, size, workers, shard_size)
    out = Path(out)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    plans = _plan(table, size, shard_size)
    todo = [p for p in plans if not _complete(shard_meta(out / p.file), p)]
    _remove_stale(out, {p.file for p in plans})
    if len(todo) < len(plans):
        log.info("%s: %d of %d shards already complete; preparing the other %d", out, len(plans) - len(todo),
                 len(plans), len(todo))
    reused = len(table) - sum(len(p.rows) for p in todo)
    with progress_bar(progress, f"prepare {table.name}", len(table), completed=reused) as advance:
        for plan, data in _decode_shards(table, todo, size, workers, strict, advance):
            write_shard(out / plan.file, data, plan.key)
    manifest = _manifest(table, out, plans, size)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, out / MANIFEST)
    if manifest["failed"]:
        log.warning("%s: %d image(s) could not be decoded and were skipped, e.g. %s", out, len(manifest["failed"]),
                    manifest["failed"][0]["reason"])
    if manifest["images"] == 0:  # every image failed
        raise DataError(f"{out}: none of the {len(table)} images could be decoded, e.g. "
                        f"{manifest['failed'][0]['reason']}")
    return manifest


def _check_args(table: SourceTable, size: int, workers: int, shard_size: int) -> None:
    if len(table) == 0:
        raise DataError(f"{table.name}: the table has no rows; nothing to prepare")
    if size < 8:
        raise DataError(f"prepare_store: size={size} must be >= 8")
    if workers < 1:
        raise DataError(f"prepare_store: workers={workers} must be >= 1")
    if shard_size < 1:
        raise DataError(f"prepare_store: shard_size={shard_size} must be >= 1")
    bad = sorted(set(table.frame["reader"]) - set(READERS))
    if bad:
        row = int(np.flatnonzero(table.frame["reader"].isin(bad).to_numpy())[0])
        raise DataError(f"{table.name}: unknown reader {bad[0]!r} (row {row}, {table.frame['path'].iloc[row]}); "
                        f"expected one of {READERS}")


def _complete(meta: dict | None, plan: ShardPlan) -> bool:
    """A shard is reused when its inputs are unchanged and every image decoded (failures are retried)."""
    return meta is not None and meta.get("key") == plan.key and not meta.get("failed")


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


def _decode_shards(table: SourceTable, plans: list[ShardPlan], size: int, workers: int, strict: bool,
                   advance) -> Iterator[tuple[ShardPlan, ShardData]]:
    """Decode the planned shards in order (in a process pool when workers > 1); yields each full shard."""
    paths = table.frame["path"].astype(str).to_numpy()
    readers = table.frame["reader"].astype(str).to_numpy()
    tasks = [(plan, rows) for plan in plans for rows in np.array_split(plan.rows, -(-len(plan.rows) // CHUNK))]
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = _run(tasks, paths, readers, size, pool, workers)
        current, parts = None, []
        for (plan, rows), (pixels, failed) in results:
            if strict and failed:
                raise DataError(failed[0][1] + " (strict: stopping at the first unreadable image)")
            if current is not None and plan is not current:
                yield current, _assemble(table, current, parts, size)
                parts = []
            current = plan
            parts.append((rows, pixels, failed))
            advance(len(rows))
        if current is not None:
            yield current, _assemble(table, current, parts, size)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _run(tasks, paths, readers, size, pool, workers) -> Iterator:
    """Results of decode_chunk in task order; at most 4 tasks per worker in flight."""
    if pool is None:
        for task in tasks:
            rows = task[1]
            yield task, decode_chunk(paths[rows].tolist(), readers[rows].tolist(), size)
        return
    pending: deque[tuple[tuple, Future]] = deque()
    queue = iter(tasks)
    for task in queue:
        rows = task[1]
        pending.append((task, pool.submit(decode_chunk, paths[rows].tolist(), readers[rows].tolist(), size)))
        if len(pending) >= 4 * workers:
            done, fut = pending.popleft()
            yield done, fut.result()
    while pending:
        done, fut = pending.popleft()
        yield done, fut.result()


def _assemble(table: SourceTable, plan: ShardPlan, parts: list, size: int) -> ShardData:
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
    pixels = np.concatenate([p for _, p, _ in parts]) if parts else np.empty((0, size, size), np.uint8)
    return ShardData(pixels, table.labels[kept], table.mask[kept], f["image_id"].iloc[kept].astype(str).tolist(),
                     f["patient_id"].iloc[kept].astype(str).tolist(), f["split"].iloc[kept].astype(str).tolist(),
                     failed)


def _manifest(table: SourceTable, out: Path, plans: list[ShardPlan], size: int) -> dict:
    """Counts and positives are read back from the shards, so they describe what is stored."""
    shards, failed = [], []
    counts = dict.fromkeys(SPLITS, 0)
    positives = {s: dict.fromkeys(table.label_names, 0) for s in SPLITS}
    digest = hashlib.sha256(f"{FORMAT_VERSION}|{size}|{'|'.join(table.label_names)}".encode())
    for plan in plans:
        view = open_shard(out / plan.file, size)
        split = np.asarray(view.table.column("split").to_pylist(), dtype=object)
        k = len(table.label_names)
        labels = np.asarray(view.table.column("labels").combine_chunks().flatten(), np.float32).reshape(-1, k)
        mask = np.asarray(view.table.column("mask").combine_chunks().flatten(), np.uint8).reshape(-1, k)
        for s in SPLITS:
            rows = split == s
            counts[s] += int(rows.sum())
            for name, c in zip(table.label_names, (labels[rows] * mask[rows]).sum(0)):
                positives[s][name] += int(c)
        shards.append({"file": plan.file, "rows": int(view.meta["rows"]), "sha256": view.meta["sha256"]})
        failed += view.meta["failed"]
        digest.update(view.meta["sha256"].encode())
    return {"format_version": FORMAT_VERSION, "source": table.name, "size": size, "resize": RESIZE_NOTE,
            "label_names": list(table.label_names), "task": table.task, "images": sum(counts.values()),
            "counts": counts, "positives": positives, "content_hash": digest.hexdigest(), "shards": shards,
            "failed": failed, "notes": table.notes}
