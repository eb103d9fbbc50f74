"""The bit-level check of a local store: every shard re-hashed from its file and compared with the sha256
the manifest recorded when it was written (datasets.store_shards.shard_digest).

It runs on a store's first use on a node (`verify_once`, called when a Store is opened) and on demand
(`thoraxmae data verify STORE`, datasets.store.verify_store). A node remembers a verified store in its
cache (datasets.remote.cache_dir) as `verified-<sha256 of manifest.json>.json`, which records, per store
folder, the size, mtime and ctime of each shard it hashed: a later open that finds the same stamps skips
the hashing (a few stat calls), and a shard written since (a different stamp) makes it hash the store again.
A lock per marker makes the processes of one node (Ray Train workers, DataLoader workers) hash a store
once. A store fetched from an object store is verified shard by shard as it is fetched (datasets.remote)
and needs no marker. When the cache cannot be written, the store is hashed on every open (logged).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from thoraxmae.datasets import remote
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.store_shards import open_shard, shard_digest

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # as datasets.store_read.MANIFEST (which imports this module)
__all__ = ["hash_shards", "manifest_hash", "marker_path", "verify_once"]


def manifest_hash(path: Path) -> str:
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()


def marker_path(path: Path) -> Path:
    """The node-cache file that records a verified store (one per manifest content)."""
    return remote.cache_dir() / f"verified-{manifest_hash(path)}.json"


def hash_shards(path: Path, manifest: dict) -> dict[int, str]:
    """shard index -> its content hash, re-computed from the file; DataError naming the first shard that
    does not match the manifest's sha256 (or cannot be read)."""
    digests = {}
    for i, entry in enumerate(manifest["shards"]):
        file = Path(path) / entry["file"]
        digest = shard_digest(open_shard(file))
        if digest != entry["sha256"]:
            raise DataError(f"{file}: contents do not match the hash recorded when it was written (damaged); "
                            "re-run `thoraxmae data prepare` to rebuild it")
        digests[i] = digest
    return digests


def verify_once(path: Path, manifest: dict) -> bool:
    """Hash the store's shards unless this node's cache says they were hashed as they are now; returns
    True when it hashed them. DataError naming a damaged shard."""
    key = _key(path)
    try:
        marker = marker_path(path)
        marker.parent.mkdir(parents=True, exist_ok=True)
        with remote.locked(marker.with_suffix(".lock")):
            if _read(marker).get(key) == _stamps(path, manifest):
                return False
            t0 = time.monotonic()
            hash_shards(path, manifest)
            record(path, manifest, marker)
            log.info("%s: %d shard(s) verified against the manifest's hashes in %.1f s", path,
                     len(manifest["shards"]), time.monotonic() - t0)
            return True
    except OSError as exc:  # an unwritable cache: verify without remembering it
        log.warning("%s: cannot record the verified store in the node cache (%s); verifying it on every open",
                    path, exc)
        hash_shards(path, manifest)
        return True


def record(path: Path, manifest: dict, marker: Path | None = None) -> None:
    """Remember in the node cache that the store's shards, as they are now, match the manifest."""
    marker = marker or marker_path(path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    entries = {k: v for k, v in _read(marker).items() if Path(k).is_dir()}  # stores since removed are dropped
    entries[_key(path)] = _stamps(path, manifest)
    tmp = marker.with_name(f"{marker.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(entries, indent=1))
    os.replace(tmp, marker)


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _stamps(path: Path, manifest: dict) -> dict[str, list[int]]:
    out = {}
    for entry in manifest["shards"]:
        st = (Path(path) / entry["file"]).stat()
        out[entry["file"]] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    return out


def _read(marker: Path) -> dict:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
