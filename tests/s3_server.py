"""Real object-store servers for the tests, on 127.0.0.1: S3 (moto's server mode) here, GCS in
tests/object_stores.py; each started by `serve`, with the environment pyarrow.fs reads its endpoint and
credentials from."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thoraxmae.study.run.ray_local import free_ports, restore_env

BUCKET = "thoraxmae-test"


@contextmanager
def serve(cmd: list[str], ready_url: str, log: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Run `cmd` (its output to `log`) until `ready_url` answers, set `env` in os.environ while it runs;
    yields `env`. The server is stopped and the environment restored afterwards."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(100):
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(ready_url, timeout=1)
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
def moto_server(log: Path) -> Iterator[dict[str, str]]:
    """Start `moto_server` on a free port; yields the S3 environment (AWS_* variables) with BUCKET created."""
    (port,) = free_ports(1)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    cmd = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/", log, env):
        from pyarrow import fs

        fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                        allow_bucket_creation=True).create_dir(BUCKET)
        yield env
