"""Security defaults: `thoraxmae ui` and every port of a local Ray (GCS, raylet, workers, agents,
dashboard) listen on 127.0.0.1 only; a UI asked for any other interface warns that MLflow has no
authentication; stopping `thoraxmae ui` stops every process it started; MLflow telemetry is off."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration import browser
from tests.integration.study_helpers import free_ports, subprocess_env
from thoraxmae.cli import main
from thoraxmae.cli import ui as cli_ui

pytestmark = pytest.mark.integration
PROC_TABLES = (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6))
TCP_LISTEN = "0A"


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (Linux /proc/net/tcp and tcp6)."""
    if not Path(PROC_TABLES[0][0]).is_file():
        pytest.skip("no /proc/net/tcp: cannot list listening sockets on this OS")
    found = set()
    for table, family in PROC_TABLES:
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, _remote, state = line.split()[1:4]
            address, port_hex = local.split(":")
            if state == TCP_LISTEN and int(port_hex, 16) == port:
                found.add(_address(address, family))
    return found


def listening_sockets(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of `pids` holds open."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = set()
    for table, family in PROC_TABLES:
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == TCP_LISTEN and fields[9] in inodes:
                found.add((_address(address, family), int(port_hex, 16)))
    return found


def _address(hex_address: str, family: int) -> str:
    raw = bytes.fromhex(hex_address)  # each 32-bit word in host byte order
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)


def test_ui_listens_on_loopback_only(tmp_path):
    (port,) = free_ports(1)
    log = tmp_path / "ui.log"
    with browser.serving_ui(f"sqlite:///{tmp_path / 'mlflow.db'}", port, log, env=subprocess_env()):
        assert listening_addresses(port) == {"127.0.0.1"}
    assert "no authentication" not in log.read_text()


def test_stopping_ui_stops_every_process_it_started(tmp_path):
    (port,) = free_ports(1)
    log = tmp_path / "ui.log"
    thoraxmae = Path(sys.executable).with_name("thoraxmae")
    # our own process group: SIGTERM goes to `thoraxmae ui` alone, as from a supervisor
    with log.open("w") as out:
        ui = subprocess.Popen([str(thoraxmae), "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--port", str(port), "--workers", "2"], stdout=out, stderr=subprocess.STDOUT,
                              env=subprocess_env())
    try:
        browser._wait_healthy(ui, f"http://127.0.0.1:{port}/health", log, 120)
        started = cli_ui.descendants(ui.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid,
                 _ in started}
        assert any("uvicorn" in n for n in names) and len(started) >= 3, names  # mlflow, uvicorn, its workers
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(60) == 0, log.read_text()[-2000:]
        deadline = time.monotonic() + 15
        while any(cli_ui._alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in started if cli_ui._alive(p)] == [], names
        assert listening_addresses(port) == set()
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait(10)


def test_ui_turns_mlflow_telemetry_off_unless_asked(monkeypatch, tmp_path):
    envs = []
    monkeypatch.setattr(cli_ui, "serve", lambda cmd, env: envs.append(env) or 0)
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    main(["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # a user who wants to share usage data
    main(["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert [e["MLFLOW_DISABLE_TELEMETRY"] for e in envs] == ["true", "false"]


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", None),
    ("0.0.0.0", None),  # MLflow's own default: localhost and private IPs
    ("192.0.2.10", "192.0.2.10:5123,192.0.2.10"),
    ("::", None),
])
def test_ui_on_another_interface_warns_and_names_its_hosts(monkeypatch, capsys, tmp_path, host, allowed):
    calls = []
    monkeypatch.setattr(cli_ui, "serve", lambda cmd, env: calls.append(cmd) or 0)
    # 192.0.2.10 is no address of this machine
    monkeypatch.setattr(cli_ui, "port_problem", lambda host, port: None)
    assert main(["ui", "--host", host, "--port", "5123", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}"]) == 0
    (cmd,) = calls
    assert cmd[cmd.index("--host") + 1] == host
    assert (cmd[cmd.index("--allowed-hosts") + 1] if "--allowed-hosts" in cmd else None) == allowed
    warned = "MLflow has no authentication" in capsys.readouterr().err
    assert warned == (host != "127.0.0.1")


def test_ui_passes_explicit_allowed_hosts(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli_ui, "serve", lambda cmd, env: calls.append(cmd) or 0)
    main(["ui", "--host", "0.0.0.0", "--allowed-hosts", "mlflow.lab:5000", "--tracking-uri",
          f"sqlite:///{tmp_path / 'm.db'}"])
    assert calls[0][calls[0].index("--allowed-hosts") + 1] == "mlflow.lab:5000"


def test_init_ray_asks_for_a_loopback_dashboard_and_no_usage_stats(monkeypatch):
    import os

    from thoraxmae.study.run import ray_local

    seen = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    monkeypatch.setattr(ray_local.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_local.ray, "init",
                        lambda **kw: seen.update(kw, usage=os.environ.get("RAY_USAGE_STATS_ENABLED")))
    ray_local.init_ray(num_cpus=2)
    assert seen["address"] == "local" and seen["include_dashboard"] and seen["dashboard_host"] == "127.0.0.1"
    assert seen["usage"] == "0"  # Ray's usage-stats reporting off for the Ray thoraxmae starts


def test_usage_stats_stay_on_when_the_user_asks(monkeypatch):
    import os

    from thoraxmae.study.run import ray_local

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    monkeypatch.setattr(ray_local.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_local.ray, "init", lambda **kw: None)
    ray_local.init_ray(num_cpus=2)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def test_local_ray_dashboard_listens_on_loopback_only(study_ray):
    url = study_ray._private.worker.global_worker.node.address_info["webui_url"]
    host, port = url.rsplit(":", 1)
    assert host == "127.0.0.1", url
    assert listening_addresses(int(port)) == {"127.0.0.1"}


def test_every_port_of_the_local_ray_listens_on_loopback_only(study_ray):
    """GCS, raylet, object manager, workers, dashboard and its agents: every socket Ray's processes (all
    started by this process: the session's Ray comes from study.run.ray_local.init_ray) listen on."""
    from thoraxmae.cli.ui import descendants

    assert study_ray._private.worker.global_worker.node.node_ip_address == "127.0.0.1"
    pids = [os.getpid(), *(pid for pid, _ in descendants(os.getpid()))]
    found = listening_sockets(pids)
    assert len(found) >= 5, found
    assert {address for address, _ in found} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, found
