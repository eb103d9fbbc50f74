"""A real S3-compatible server for the tests: moto's server mode on 127.0.0.1, a fresh bucket, and the
environment pyarrow.fs reads its endpoint and credentials from."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thoraxmae.study.tune import free_ports, restore_env

BUCKET = "thoraxmae-test"


@contextmanager
def moto_server(log: Path) -> Iterator[dict[str, str]]:
    """Start `moto_server` on a free port; yields the S3 environment (AWS_* variables) with BUCKET created."""
    (port,) = free_ports(1)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(100):
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            from pyarrow import fs

            fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                            allow_bucket_creation=True).create_dir(BUCKET)
            yield env
        finally:
            restore_env(saved)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
