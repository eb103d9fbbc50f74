"""Where a study's MLflow lives, checked before any MLflow client or Ray starts.

`check_tracking_uri(uri, write=...)` raises a one-line SpecError unless MLflow can use the URI: a
SQLite file must exist to be read (a read never creates it: MLflow would create the file and its
folders) and be writable to be written; a server must answer; folders, file:// and unknown schemes
are refused (MLflow 3 no longer serves its file store). `mlflow_errors` turns MLflow's own errors
into the same one-line form.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thoraxmae.study.errors import SpecError

# MLflow's database stores besides SQLite (driver-checked by MLflow)
DB_SCHEMES = ("postgresql", "mysql", "mssql")
HTTP_TIMEOUT_S = 5.0


def mlflow_cli_defaults() -> None:
    """MLflow's defaults for our commands, unless the user set the variables: no usage data sent (MLflow
    >= 3.2 sends it otherwise), no progress bar for each artifact read (spec.yaml) between our lines, and
    no traceback logged for a database error that MLflow raises anyway (`database or disk is full`): the
    command reports the raised error in one line."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    db_log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _RaisedAnyway) for f in db_log.filters):
        db_log.addFilter(_RaisedAnyway())


class _RaisedAnyway(logging.Filter):
    """Drops MLflow's "SQLAlchemy database error" log record: the same error is raised as an MlflowException
    right after it (mlflow.store.db.utils.make_managed_session), and printing it twice, with a traceback,
    buries the one line that names it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SQLAlchemy database error")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else `sqlite:///<cwd>/mlflow.db` (the study spec's default too)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative paths from the working directory), else None."""
    m = re.fullmatch(r"sqlite:///([^?]+)(\?.*)?", uri)
    return Path(m.group(1)).expanduser().absolute() if m else None


def check_tracking_uri(uri: str, *, write: bool) -> None:
    """SpecError (one line) unless MLflow can use `uri`: SQLite files must exist for reading (nothing is
    created) and be writable for writing; servers must answer; folders, file:// and unknown schemes are
    refused (MLflow 3 no longer serves its file store)."""
    scheme = check_scheme(uri)
    if scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None:
            raise SpecError(f"tracking URI {uri}: expected sqlite:///PATH/mlflow.db (an in-memory database "
                            f"keeps nothing)")
        _check_sqlite(uri, path, write)
    elif scheme in ("http", "https"):
        _check_server(uri)


def check_scheme(uri: str) -> str:
    """The URI's scheme when MLflow 3 serves it (sqlite, http(s), a database); SpecError otherwise. Needs
    nothing but the text (`study submit` checks this much; the store itself is the cluster's)."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file"):
        raise SpecError(f"tracking URI {uri}: a folder (MLflow's file store) is not supported by MLflow 3; "
                        "use sqlite:///ABSOLUTE/PATH/mlflow.db or an http(s):// tracking server")
    if scheme not in ("sqlite", "http", "https", *DB_SCHEMES):
        raise SpecError(f"tracking URI {uri}: unknown scheme `{scheme}://`; use sqlite:///PATH/mlflow.db, "
                        f"http(s)://HOST:PORT or a database URI ({', '.join(s + '://' for s in DB_SCHEMES)})")
    return scheme


def _check_sqlite(uri: str, path: Path, write: bool) -> None:
    if path.is_dir():
        raise SpecError(f"tracking URI {uri}: {path} is a folder, not a database file")
    if not path.exists():
        if not write:
            raise SpecError(f"tracking URI {uri}: no MLflow database at {path} (nothing created; give "
                            f"--tracking-uri or set MLFLOW_TRACKING_URI)")
        folder = next(p for p in path.parents if p.exists())
        _check_folder_writable(uri, folder, f"cannot create {path}")
        return
    try:
        with _connect(path, "rw" if write else "ro") as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not write and "experiments" not in tables:  # MLflow would write its tables into it
                raise SpecError(f"tracking URI {uri}: {path} is not an MLflow database (no experiments "
                                "table)")
            if write:  # takes the write lock, so a read-only file or file system fails here
                db.execute("BEGIN IMMEDIATE")
                db.rollback()
    except sqlite3.Error as exc:
        raise SpecError(f"tracking URI {uri}: {path} cannot be {'written' if write else 'read'} as an SQLite "
                        f"database ({exc})") from None
    if write:  # SQLite writes its journal beside the database
        _check_folder_writable(uri, path.parent, f"{path} cannot be written")


@contextmanager
def _connect(path: Path, mode: str) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True, timeout=30)
    try:
        yield db
    finally:
        db.close()


def _check_folder_writable(uri: str, folder: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SpecError(f"tracking URI {uri}: {what}: {folder} is not writable "
                        f"({exc.strerror or exc})") from None


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HTTP_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answers (a proxy or an auth layer may refuse /health itself)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecError(f"tracking URI {uri}: no MLflow server answers ({reason})") from None


@contextmanager
def mlflow_errors(uri: str) -> Iterator[None]:
    """MLflow's errors (and OS errors under it) as one-line SpecErrors naming the tracking URI."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        first = (exc.message or str(exc)).strip().splitlines()
        raise SpecError(f"tracking URI {uri}: MLflow failed: "
                        f"{first[0] if first else type(exc).__name__}") from None
    except OSError as exc:
        raise SpecError(f"tracking URI {uri}: {exc}") from None


def client_for(uri: str, *, write: bool = False):
    """An MlflowClient for a checked URI (see check_tracking_uri)."""
    check_tracking_uri(uri, write=write)
    from mlflow import MlflowClient

    with mlflow_errors(uri):
        return MlflowClient(tracking_uri=uri)


