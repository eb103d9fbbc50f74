"""Real object-store servers for the tests, on 127.0.0.1: S3 (moto's server mode, tests/s3_server.py) and
GCS (gcp-storage-emulator, in memory). Each yields the environment that points pyarrow.fs at it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.s3_server import BUCKET, moto_server
from thoraxmae.study.tune import free_ports, restore_env

__all__ = ["BUCKET", "gcs_emulator", "moto_server", "object_store"]


@contextmanager
def gcs_emulator(log: Path) -> Iterator[dict[str, str]]:
    """Start gcp-storage-emulator on a free port with BUCKET; yields {"STORAGE_EMULATOR_HOST": ...}, also set
    in os.environ while it runs."""
    (port,) = free_ports(1)
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    with log.open("w") as out:
        proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                                 "--default-bucket", BUCKET], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    try:
        for _ in range(100):
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            restore_env(saved)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def object_store(scheme: str, log: Path) -> Iterator[str]:
    """The root URI (`s3://BUCKET` or `gs://BUCKET`) of a fresh server of that scheme."""
    server = moto_server if scheme == "s3" else gcs_emulator
    with server(log):
        yield f"{scheme}://{BUCKET}"
