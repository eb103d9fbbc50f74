"""Security defaults: `thoraxmae ui` and the local Ray dashboard listen on 127.0.0.1 only, and a UI
asked for any other interface warns that MLflow has no authentication."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.integration import browser
from tests.integration.study_helpers import free_ports, subprocess_env
from thoraxmae.cli import main
from thoraxmae.study import cli_ui

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


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", None),
    ("0.0.0.0", None),  # MLflow's own default: localhost and private IPs
    ("192.0.2.10", "192.0.2.10:5123,192.0.2.10"),
    ("::", None),
])
def test_ui_on_another_interface_warns_and_names_its_hosts(monkeypatch, capsys, tmp_path, host, allowed):
    calls = []
    monkeypatch.setattr(cli_ui, "serve", lambda cmd, env: calls.append(cmd) or 0)
    assert main(["ui", "--host", host, "--port", "5123", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 0
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


def test_init_ray_asks_for_a_loopback_dashboard(monkeypatch):
    from thoraxmae.study import tune

    seen = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(tune.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(tune.ray, "init", lambda **kw: seen.update(kw))
    tune.init_ray(num_cpus=2)
    assert seen["address"] == "local" and seen["include_dashboard"] and seen["dashboard_host"] == "127.0.0.1"


def test_local_ray_dashboard_listens_on_loopback_only(study_ray):
    url = study_ray._private.worker.global_worker.node.address_info["webui_url"]
    host, port = url.rsplit(":", 1)
    assert host == "127.0.0.1", url
    assert listening_addresses(int(port)) == {"127.0.0.1"}
