"""One way to read and write study storage, local folder or object store (`s3://bucket/tune`, `gs://...`).

A study's storage (`storage_path`: Tune's folders, the Train runs, the pre-training registry, the final
markers) may be a local or shared folder, or an object-store URI when the cluster has no shared file
system. `Location` wraps pyarrow.fs for both, so study code never holds a local `Path` on storage:

    loc = Location.of("s3://bucket/tune") / "my-study" / "spec.yaml"
    loc.write_text(text); loc.read_text(); loc.exists(); str(loc)  # 's3://bucket/tune/my-study/spec.yaml'

Ray Tune and Ray Train take the same storage as `storage_path=loc.fs_path, storage_filesystem=loc.fs`
(`ray_storage`), and report checkpoints as paths inside that filesystem; `loc.child_uri(fs_path)` turns
one back into a URI. Files that must be local to be used (a checkpoint to load) are fetched once per
node with `local_file` into the node's cache (datasets.remote.cache_dir), keyed by URI, size and mtime.
Credentials and endpoint: as datasets.remote (AWS_* variables, GOOGLE_APPLICATION_CREDENTIALS).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thoraxmae.datasets.config import is_uri
from thoraxmae.datasets.errors import DataError

__all__ = ["Location", "absolute", "as_config", "is_uri", "local_dir", "local_file", "shown"]


@dataclass(frozen=True)
class Location:
    """A file or folder on study storage. `uri`: what users see (a local absolute path, or scheme://...);
    `fs`/`fs_path`: the pyarrow filesystem and the path inside it."""

    uri: str
    fs: Any
    fs_path: str

    @classmethod
    def of(cls, target: Location | Path | str) -> Location:
        if isinstance(target, Location):
            return target
        if is_uri(target):
            from thoraxmae.datasets.remote import filesystem

            uri = str(target).rstrip("/")
            filesys, path = filesystem(uri)
            return cls(uri, filesys, path.rstrip("/"))
        from pyarrow import fs

        path = str(Path(target).expanduser().absolute())
        return cls(path, fs.LocalFileSystem(), path)

    # --- naming ---------------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return not is_uri(self.uri)

    @property
    def path(self) -> Path:
        """The local Path (only for a local location)."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.uri)

    @property
    def name(self) -> str:
        return self.fs_path.rstrip("/").rpartition("/")[2]

    @property
    def parent(self) -> Location:
        return Location(self.uri.rpartition("/")[0], self.fs, self.fs_path.rpartition("/")[0])

    def __truediv__(self, name: str) -> Location:
        name = str(name).strip("/")
        return Location(f"{self.uri}/{name}", self.fs, f"{self.fs_path}/{name}")

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:  # only a local location is a file-system path
        return str(self.path)

    def child_uri(self, fs_path: str) -> str:
        """A path inside this location's filesystem (as Ray reports checkpoints) as a URI like this one's."""
        if self.is_local or is_uri(fs_path):
            return fs_path
        scheme = self.uri.partition("://")[0]
        return f"{scheme}://{fs_path.lstrip('/')}"

    # --- reading --------------------------------------------------------------------------------------
    def _info(self):
        return self.fs.get_file_info(self.fs_path)

    def exists(self) -> bool:
        from pyarrow import fs

        return self._info().type != fs.FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow import fs

        return self._info().type == fs.FileType.File

    def is_dir(self) -> bool:
        from pyarrow import fs

        return self._info().type == fs.FileType.Directory

    def size(self) -> int:
        return int(self._info().size or 0)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.fs_path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def iterdir(self) -> list[Location]:
        """The direct children (files and folders), sorted by name; [] when this is not a folder."""
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.fs_path, allow_not_found=True))
        return sorted((self / i.path.rstrip("/").rpartition("/")[2] for i in infos), key=lambda loc: loc.uri)

    def walk_files(self, name: str) -> list[Location]:
        """Every file called `name` below this folder (any depth), sorted."""
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.fs_path, recursive=True, allow_not_found=True))
        found = [i.path for i in infos if i.type == fs.FileType.File and i.path.rpartition("/")[2] == name]
        return [self / p[len(self.fs_path):] for p in sorted(found)]

    # --- writing --------------------------------------------------------------------------------------
    def mkdir(self) -> None:
        self.fs.create_dir(self.fs_path, recursive=True)

    def write_bytes(self, data: bytes) -> None:
        """Whole or not at all: a local file is written beside and renamed; an object store's PUT is
        atomic."""
        if self.is_local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, self.path)
            except BaseException:  # a full disk: no partial file left beside the intact one
                tmp.unlink(missing_ok=True)
                raise
            return
        # the folders as marker objects: GCS lists a folder's subfolders only when they exist as markers
        self.fs.create_dir(self.parent.fs_path, recursive=True)
        with self.fs.open_output_stream(self.fs_path) as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self) -> None:
        if self.exists():
            self.fs.delete_file(self.fs_path)

    def rmtree(self) -> None:
        """Delete this folder and everything under it (nothing when it is not there)."""
        if self.is_dir():
            self.fs.delete_dir(self.fs_path)


def ray_storage(storage: Location | Path | str) -> dict[str, Any]:
    """RunConfig / Tuner.restore arguments for this storage: a local folder as a plain path (Ray's own
    default filesystem), an object store as its pyarrow filesystem and the path inside it (so the endpoint
    and credentials of datasets.remote.filesystem apply to Ray's uploads too)."""
    loc = Location.of(storage)
    if loc.is_local:
        return {"storage_path": loc.uri}
    return {"storage_path": loc.fs_path, "storage_filesystem": loc.fs}


def absolute(target: Path | str, base: Path | None = None) -> Path | str:
    """A location as configs hold it: an object-store URI as given (a str), a path absolute (relative to
    `base`, default the working directory; `~` expanded)."""
    if is_uri(target):
        return str(target)
    return ((base or Path.cwd()) / Path(target).expanduser()).resolve()


def as_config(target: Path | str) -> Path | str:
    """A URI stays a str (a Path would fold `s3://b/x` into `s3:/b/x`); anything else becomes a Path."""
    return str(target) if is_uri(target) else Path(target)


def shown(target: Path | str, local: Path) -> Path | str:
    """How to name a file to the user: a URI as given, not by its cached copy; a local file by `local`."""
    return str(target) if is_uri(target) else local


@contextmanager
def local_dir(target: Path | str) -> Iterator[Path]:
    """A folder (a checkpoint) as a local folder: a local one as it is; one on object storage (a URI)
    downloaded
    into a temporary folder of the same name, removed afterwards. A folder that is not there is yielded as
    a path that does not exist."""
    if not is_uri(target):
        yield Path(target)
        return
    from pyarrow import fs

    loc = Location.of(str(target))
    with tempfile.TemporaryDirectory(prefix="thoraxmae-folder-") as tmp:
        local = Path(tmp) / loc.name
        if loc.is_dir():
            local.mkdir()  # copy_files creates the folders below, not this one
            fs.copy_files(loc.fs_path, str(local), source_filesystem=loc.fs,
                          destination_filesystem=fs.LocalFileSystem())
        yield local


def local_file(target: Path | str) -> Path:
    """A local path for a file that may be on object storage: a local path as it is; a URI's file fetched
    once into the node's cache (`<cache>/file-<hash of URI, size, mtime>/<name>`), so a file rewritten at
    the same URI is fetched again. It shares the stores' bound and eviction (datasets.remote:
    THORAXMAE_CACHE_GB,
    least recently used first) and their lock, so the processes of a node fetch it once. DataError names the
    URI when it cannot be read."""
    if not is_uri(target):
        return Path(target)
    from pyarrow import fs

    from thoraxmae.datasets import remote

    loc = Location.of(str(target))
    info = loc._info()
    if info.type != fs.FileType.File:
        raise DataError(f"{loc}: no such file on the object store")
    root = remote.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    stamp = f"{loc.uri}|{info.size}|{info.mtime_ns}"
    folder = root / f"file-{hashlib.sha256(stamp.encode()).hexdigest()[:24]}"
    final = folder / loc.name
    with remote.locked(root / remote.LOCK):
        if not (final.is_file() and final.stat().st_size == info.size):
            remote.evict(root, keep=folder, need=int(info.size or 0))
            folder.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
            try:
                fs.copy_files(loc.fs_path, str(tmp), source_filesystem=loc.fs,
                              destination_filesystem=fs.LocalFileSystem())
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise DataError(f"{loc}: cannot fetch ({exc})") from None
            os.replace(tmp, final)
        os.utime(folder)  # least recently used = oldest folder mtime
    return final
