"""Real object-store servers for the tests, on 127.0.0.1: S3 (moto's server mode, tests/s3_server.py) and
GCS (gcp-storage-emulator, in memory). Each yields the environment that points pyarrow.fs at it."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.s3_server import BUCKET, moto_server, serve
from thoraxmae.study.run.ray_local import free_ports

__all__ = ["BUCKET", "gcs_emulator", "moto_server", "object_store"]


@contextmanager
def gcs_emulator(log: Path) -> Iterator[dict[str, str]]:
    """Start gcp-storage-emulator on a free port with BUCKET; yields {"STORAGE_EMULATOR_HOST": ...}, also set
    in os.environ while it runs."""
    (port,) = free_ports(1)
    cmd = [str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "--host", "127.0.0.1",
           "--port",
           str(port), "--in-memory", "--default-bucket", BUCKET]
    with serve(cmd, f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}", log,
               {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}) as env:
        yield env


@contextmanager
def object_store(scheme: str, log: Path) -> Iterator[str]:
    """The root URI (`s3://BUCKET` or `gs://BUCKET`) of a fresh server of that scheme."""
    server = moto_server if scheme == "s3" else gcs_emulator
    with server(log):
        yield f"{scheme}://{BUCKET}"
