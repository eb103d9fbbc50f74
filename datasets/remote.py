"""Prepared stores on object storage (`s3://bucket/stores/nih768`, `gs://...`), read through pyarrow.fs.

A worker never reads pixels over the network: `local_store(uri)` fetches the manifest and the shard files
once into a node-local cache and returns that folder, which the memory-mapped reader
(datasets.store_read) opens like any store. Local paths pass through unchanged.

    path = local_store("s3://bucket/stores/nih768")   # ~/.cache/thoraxmae/stores/<content_hash>/
    upload_store(Path("/tmp/nih768"), "s3://bucket/stores/nih768")

Cache: `$THORAXMAE_CACHE_DIR` (default ~/.cache/thoraxmae/stores), one folder per store named by its
manifest's content hash (docs/data-formats.md "Prepared store") and one `file-<hash>` folder per fetched
checkpoint (datasets.storage.local_file), at most `$THORAXMAE_CACHE_GB` GB (default 200) in all: before a
store is fetched, whole stores are evicted, least recently used first.
Each shard is downloaded to a temp name, checked against the manifest's per-shard sha256 and renamed
into place; `fetched.json` records the size and mtime of each verified shard, so a later open re-checks
only those (a shard changed on disk since is fetched again) and an interrupted fetch resumes. The
manifest is written last: a cached store without one is incomplete. A lock file makes the processes of
one node (Ray Train workers, DataLoader workers) fetch a store once; the others wait and find it cached.
Credentials and endpoint come from pyarrow's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, AWS_DEFAULT_REGION; GOOGLE_APPLICATION_CREDENTIALS, or
STORAGE_EMULATOR_HOST for a GCS emulator); the endpoint variables are passed to pyarrow here, which does
not read them itself.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from thoraxmae.datasets.config import is_uri
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.store_shards import FORMAT_VERSION, open_shard, shard_digest

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # as datasets.store_read.MANIFEST (which imports this module)
FETCHED = "fetched.json"
LOCK = ".lock"
DEFAULT_CACHE_GB = 200.0
__all__ = ["cache_dir", "is_uri", "local_store", "read_manifest_uri", "upload_store"]


def cache_dir() -> Path:
    return Path(os.environ.get("THORAXMAE_CACHE_DIR") or Path.home() / ".cache" / "thoraxmae" / "stores")


def cache_limit_bytes() -> int:
    raw = os.environ.get("THORAXMAE_CACHE_GB", str(DEFAULT_CACHE_GB))
    try:
        gb = float(raw)
    except ValueError:
        raise DataError(f"THORAXMAE_CACHE_GB={raw!r}: expected a number of gigabytes") from None
    return int(gb * 1e9)


def filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a store URI; DataError naming the URI when pyarrow cannot."""
    from pyarrow import fs

    try:
        if uri.startswith("gs://") and os.environ.get("STORAGE_EMULATOR_HOST"):
            return _gcs_emulator(os.environ["STORAGE_EMULATOR_HOST"]), uri.rstrip("/").removeprefix("gs://")
        filesys, path = fs.FileSystem.from_uri(_with_endpoint(uri.rstrip("/")))
    except (ValueError, NotImplementedError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{uri}: cannot open this URI ({exc})") from None
    return filesys, path


def _gcs_emulator(host: str):
    """gs:// against a GCS emulator named by STORAGE_EMULATOR_HOST (Google's variable for one, e.g.
    http://127.0.0.1:9023): pyarrow's GCS URIs cannot say `anonymous`, so the filesystem is built here."""
    from pyarrow import fs

    scheme, _, hostport = host.rstrip("/").rpartition("://")
    return fs.GcsFileSystem(endpoint_override=hostport, scheme=scheme or "http", anonymous=True)


def _with_endpoint(uri: str) -> str:
    """An s3:// URI with the endpoint of AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (MinIO, Ceph, a local server):
    pyarrow's S3 client does not read those variables itself, so they go into the URI's query."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not uri.startswith("s3://") or not endpoint or "endpoint_override=" in uri:
        return uri
    scheme, _, host = endpoint.rstrip("/").rpartition("://")
    query = {"endpoint_override": host, "scheme": scheme or "https"}
    if os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"):
        query["region"] = os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"]
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(query)}"


def read_manifest_uri(uri: str) -> dict:
    """The remote store's manifest.json as a dict (not checked beyond being a JSON object)."""
    filesys, root = filesystem(uri)
    try:
        with filesys.open_input_stream(f"{root}/{MANIFEST}") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{uri}: not a prepared store (no {MANIFEST}); prepare one with "
                        f"`thoraxmae data prepare ... --out {uri}`") from None
    except OSError as exc:
        raise DataError(f"{uri}/{MANIFEST}: cannot read ({exc})") from None
    try:
        manifest = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{uri}/{MANIFEST}: unreadable store manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{uri}/{MANIFEST}: unreadable store manifest (not a JSON object)")
    return manifest


def missing_shards(uri: str, manifest: dict) -> list[str]:
    """The shard files the manifest lists that the object store does not hold."""
    from pyarrow import fs

    filesys, root = filesystem(uri)
    infos = filesys.get_file_info([f"{root}/{e['file']}" for e in manifest["shards"]])
    return [e["file"] for e, info in zip(manifest["shards"], infos, strict=True)
            if info.type != fs.FileType.File]


def shard_sizes(uri: str, manifest: dict) -> dict[str, int | None]:
    """The byte size of each shard object the manifest lists (None for one the object store lacks)."""
    from pyarrow import fs

    filesys, root = filesystem(uri)
    try:
        infos = filesys.get_file_info([f"{root}/{e['file']}" for e in manifest["shards"]])
    except OSError as exc:
        raise DataError(f"{uri}: cannot list the store's shards ({exc})") from None
    return {e["file"]: (info.size if info.type == fs.FileType.File else None)
            for e, info in zip(manifest["shards"], infos, strict=True)}


def local_store(store: Path | str) -> Path:
    """A local folder holding the store: a local path as it is, a URI's store fetched into the cache."""
    if not is_uri(store):
        return Path(store)
    uri = str(store).rstrip("/")
    manifest = read_manifest_uri(uri)
    if manifest.get("format_version") != FORMAT_VERSION or "content_hash" not in manifest:
        raise DataError(f"{uri}: store format version {manifest.get('format_version')!r}, this thoraxmae "
                        f"reads version {FORMAT_VERSION}; re-run `thoraxmae data prepare`")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / str(manifest["content_hash"])
    with locked(root / LOCK):
        if not _complete(folder, manifest):
            evict(root, keep=folder, need=_remote_bytes(uri, manifest))
            _fetch(uri, manifest, folder)
        os.utime(folder)  # least recently used = oldest folder mtime
    return folder


def upload_store(local: Path, uri: str) -> None:
    """Copy a prepared store's shards, then its manifest (last: a store without one is incomplete), to a
    URI."""
    from pyarrow import fs

    filesys, root = filesystem(uri)
    manifest = json.loads((Path(local) / MANIFEST).read_text())
    try:
        filesys.create_dir(f"{root}/shards", recursive=True)
        for entry in manifest["shards"]:
            fs.copy_files(str(Path(local) / entry["file"]), f"{root}/{entry['file']}",
                          source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesys)
        fs.copy_files(str(Path(local) / MANIFEST), f"{root}/{MANIFEST}",
                      source_filesystem=fs.LocalFileSystem(),
                      destination_filesystem=filesys)
    except OSError as exc:
        raise DataError(f"{uri}: cannot upload the store ({exc})") from None
    log.info("%s: uploaded %d shard(s) and the manifest", uri, len(manifest["shards"]))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _fetched(folder: Path) -> dict:
    try:
        return json.loads((folder / FETCHED).read_text())
    except (OSError, ValueError):
        return {}


def _complete(folder: Path, manifest: dict) -> bool:
    """The cached copy has the manifest and every shard as it was when verified."""
    if not (folder / MANIFEST).is_file():
        return False
    done = _fetched(folder)
    for entry in manifest["shards"]:
        file = folder / entry["file"]
        if not file.is_file() or done.get(entry["file"]) != _stamp(file):
            return False
    return True


def _remote_bytes(uri: str, manifest: dict) -> int:
    filesys, root = filesystem(uri)
    infos = filesys.get_file_info([f"{root}/{e['file']}" for e in manifest["shards"]])
    return sum(max(info.size or 0, 0) for info in infos)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def evict(root: Path, keep: Path, need: int) -> None:
    """Remove whole cached stores, least recently used first, until `need` more bytes fit the limit.
    (A process that has a removed store's shards memory-mapped keeps reading them: the files live on
    until it closes them.)"""
    limit = cache_limit_bytes()
    if need > limit:
        raise DataError(f"{keep.name}: the store needs {need / 1e9:.3g} GB, more than the cache's limit "
                        f"THORAXMAE_CACHE_GB={limit / 1e9:.3g} ({root})")
    others = sorted((p for p in root.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    used = sum(_folder_bytes(p) for p in others) + (_folder_bytes(keep) if keep.exists() else 0)
    for old in others:
        if used + need <= limit:
            break
        size = _folder_bytes(old)
        log.info("store cache %s: evicting %s (%.2f GB, least recently used)", root, old.name, size / 1e9)
        shutil.rmtree(old, ignore_errors=True)
        used -= size


def _fetch(uri: str, manifest: dict, folder: Path) -> None:
    """Download the shards not yet verified (each checked against the manifest's sha256, then renamed
    into place), then write fetched.json and the manifest."""
    from pyarrow import fs

    filesys, root = filesystem(uri)
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    done = {k: v for k, v in _fetched(folder).items()
            if (folder / k).is_file() and _stamp(folder / k) == v}
    (folder / MANIFEST).unlink(missing_ok=True)
    t0, fetched = time.monotonic(), 0
    for entry in manifest["shards"]:
        if entry["file"] in done:
            continue
        final = folder / entry["file"]
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        try:
            fs.copy_files(f"{root}/{entry['file']}", str(tmp), source_filesystem=filesys,
                          destination_filesystem=fs.LocalFileSystem())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{uri}/{entry['file']}: cannot fetch store shard ({exc})") from None
        digest = shard_digest(open_shard(tmp))
        if digest != entry["sha256"]:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{uri}/{entry['file']}: contents do not match the manifest's sha256 (damaged "
                            "upload); re-run `thoraxmae data prepare --out` to this URI")
        os.replace(tmp, final)
        done[entry["file"]] = _stamp(final)
        fetched += 1
        _write_json(folder / FETCHED, done)
    _write_json(folder / FETCHED, done)
    _write_json(folder / MANIFEST, manifest)
    log.info("%s: fetched %d shard(s) into %s in %.1f s", uri, fetched, folder, time.monotonic() - t0)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
