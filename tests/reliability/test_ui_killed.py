"""`kill -9` of `thoraxmae ui` leaves nothing serving: the MLflow server, its uvicorn worker, its job runner
and
the job runner's consumers all stop within seconds (the server's process group dies with `thoraxmae ui`:
PR_SET_PDEATHSIG on the server, a watchdog for the group). A real MLflow server on a free loopback port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration import browser
from tests.integration.study_helpers import CLI, subprocess_env
from tests.integration.test_security import listening_addresses
from thoraxmae.cli import ui as cli_ui
from thoraxmae.study.run.ray_local import free_ports

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="Linux: /proc and PR_SET_PDEATHSIG")


def test_kill_9_of_ui_stops_the_mlflow_server_it_started(tmp_path):
    (port,) = free_ports(1)
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen([*CLI, "ui", "--tracking-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(port)], stdout=out,
                              stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True)
    started: list[tuple[int, str]] = []
    try:
        browser._wait_healthy(ui, f"http://127.0.0.1:{port}/health", log, 180)
        started = cli_ui.descendants(ui.pid)
        names = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid,
                 _ in started]
        assert any("uvicorn" in n for n in names) and any("huey" in n for n in names), names
        os.kill(ui.pid, signal.SIGKILL)
        ui.wait(10)
        deadline = time.monotonic() + 30
        while any(cli_ui._alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [n for p, n in zip(started, names, strict=True) if cli_ui._alive(p)]
        assert left == [], left
        assert listening_addresses(port) == set()
    finally:
        for pid, _ in (p for p in started if cli_ui._alive(p)):
            os.kill(pid, signal.SIGKILL)
        if ui.poll() is None:
            ui.kill()
            ui.wait(10)

