"""`prepare_store(workers=N)`'s decoding processes die with their parent: a real `prepare` process is killed
with SIGKILL mid-run, and its workers must be gone seconds later (a plain process pool leaves them waiting on
their task queue forever)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thoraxmae.datasets.store_pool import POLL_S

PREPARE = r"""
import multiprocessing, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image
from thoraxmae.datasets.store import prepare_store
from thoraxmae.datasets.table import SourceTable

root = Path(sys.argv[1])
rows = []
for i in range(128):
    path = root / f"img{i:03d}.png"
    Image.fromarray(np.full((24, 24), i, np.uint8)).save(path)
    rows.append({"image_id": f"i{i}", "path": str(path), "patient_id": f"p{i}", "split": "train", "reader": "image"})
table = SourceTable("toy", ("A",), pd.DataFrame(rows), np.zeros((128, 1)), np.ones((128, 1)))

def progress(done, total):
    if done:  # the pool is up: publish its workers' pids, then hang until killed
        pids = " ".join(str(p.pid) for p in multiprocessing.active_children())
        (root / "pids.tmp").write_text(pids)
        (root / "pids.tmp").rename(root / "pids")
        time.sleep(600)

prepare_store(table, root / "store", size=16, workers=2, shard_size=32, progress=progress)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_prepare_process_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "pids").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the prepare process never reached its first shard"
            time.sleep(0.1)
        workers = [int(p) for p in (tmp_path / "pids").read_text().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10 * POLL_S + 5
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "decoding workers outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
