"""The decoding pool of `prepare_store`: worker processes that die with their parent.

A plain ProcessPoolExecutor worker waits on its task queue forever when the parent is killed (kill -9
never runs the pool's shutdown). Ours are started with `spawn` (no inherited threads or locks) and an
initializer that (a) asks Linux to SIGKILL the worker when its parent dies (prctl PR_SET_PDEATHSIG) and
(b) starts a daemon thread that polls the parent's pid, the portable fallback: a worker whose parent is
gone exits within POLL_S seconds.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

POLL_S = 0.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes bound to this process's life."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def die_with_parent(parent: int) -> None:
    """Pool initializer: exit as soon as process `parent` is gone (see the module docstring)."""
    if sys.platform.startswith("linux"):
        # no prctl in this libc: the watch thread alone does it
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)
