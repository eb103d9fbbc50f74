"""The local Ray a study starts when no cluster is named, bound to 127.0.0.1 and quiet.

`init_ray` joins RAY_ADDRESS when it is set (or inside a Ray job); otherwise it starts Ray on this machine
with every port on loopback and Ray's usage-stats reporting off (RAY_USAGE_STATS_ENABLED=0 unless the
user set it: a medical-data site expects nothing to phone home; README, Security).

Ray's console lines that a study's user cannot act on are dropped here and nowhere else (`KNOWN_NOISE`,
`quiet_known_noise`); every other warning and error of Ray still reaches the console.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

import ray

LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node IP is 127.0.0.1 (see init_ray)
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"  # Ray's own switch; "0" unless the user set it
# What the raylet pushes to the driver's console that no one running a study can act on:
KNOWN_NOISE = (
    # "N PYTHON worker processes have been started on node ...": each trial's driver, Train controller and
    # workers are actors, each its own worker process, by design; the count says nothing is wrong
    "worker processes have been started on node",
)
# The local Ray's start-up hint to turn token authentication off: the study's Ray listens on loopback and
# keeps Ray's default (token authentication on); turning it off is not advice to give a study's user.
TOKEN_HINT = ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")


def init_ray(**local_options) -> float:
    """Join RAY_ADDRESS when set (or inside a Ray job), else start a local Ray that listens on 127.0.0.1
    only, with its dashboard (which also frees the placement groups of trials that ASHA stops). Returns
    seconds.

    Loopback only: Ray binds its GCS, raylet, worker and agent ports to the node's IP address, which
    Ray takes from the network unless clusters are off for the process (as Ray does on macOS and
    Windows); `_local_node_ip` turns them off while Ray starts, so the node's IP is 127.0.0.1 and
    nothing listens on another interface (tests/integration/test_security.py checks every socket).
    A local Ray is started on a chosen GCS port with RAY_ADDRESS naming it in the environment its
    processes inherit: Train's placement-group cleaner finds "its" cluster through RAY_ADDRESS (or
    the last `ray start` on the machine), and on a machine running several Rays it would otherwise
    ask the wrong one, leak the group of every stopped trial and hang the study.
    `local_options` go to ray.init (e.g. num_cpus=2 in tests)."""
    t0 = time.monotonic()
    if ray.is_initialized():
        return 0.0
    quiet_known_noise()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return time.monotonic() - t0
    os.environ.setdefault(USAGE_STATS_ENV, "0")  # the processes Ray starts inherit it
    gcs_port, dashboard_port = free_ports(2)
    own = {"RAY_GCS_SERVER_PORT": str(gcs_port), "RAY_ADDRESS": f"{LOOPBACK}:{gcs_port}", LOCAL_ONLY_ENV: "0"}
    saved = {k: os.environ.get(k) for k in own}
    os.environ.update(own)
    try:
        options = {"include_dashboard": True, "dashboard_host": LOOPBACK, "dashboard_port": dashboard_port,
                   "log_to_driver": False, **local_options}
        with _local_node_ip(), _without(*TOKEN_HINT):
            ray.init(address="local", **options)  # "local": never a cluster some `ray start` left here
    finally:
        restore_env(saved)
    return time.monotonic() - t0


def quiet_known_noise() -> None:
    """Drop KNOWN_NOISE from what Ray prints on this driver's console (the raylet's messages, which Ray's
    error listener prints through ray._private.worker.print_to_stdstream); everything else passes."""
    from ray._private import worker

    shown = worker.print_to_stdstream
    if getattr(shown, "drops_known_noise", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", []) if not any(noise in line for noise in KNOWN_NOISE)]
        if lines:
            shown({**data, "lines": lines}, ignore_prefix=ignore_prefix)

    print_to_stdstream.drops_known_noise = True
    worker.print_to_stdstream = print_to_stdstream


class _Drop(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


@contextlib.contextmanager
def _without(logger: str, start: str):
    """Drop the log records of `logger` that start with `start` while the block runs."""
    drop = _Drop(start)
    logging.getLogger(logger).addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(drop)


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as `saved` ({name: value, or None when it was unset})."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def _local_node_ip():
    """Ray reads LOCAL_ONLY_ENV when it is imported (ray._private.ray_constants.ENABLE_RAY_CLUSTER):
    this process imported Ray already, so the flag is set for the start too; processes Ray starts
    read the environment variable."""
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports
