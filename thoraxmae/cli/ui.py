"""`thoraxmae ui`: the MLflow UI for the tracking backend, on 127.0.0.1 unless asked otherwise.

The MLflow server runs as this process's child; SIGTERM, SIGINT and SIGHUP are forwarded to it (MLflow
forwards them to its uvicorn server, whose workers and job runner stop with it) and this process waits
for it, so stopping `thoraxmae ui` stops everything it started; any process of the server still alive
then is killed. On Linux the server also gets SIGTERM when this process is killed outright (kill -9):
nothing keeps serving after `thoraxmae ui` is gone. The port is checked before the server starts (one
error line, exit 2, for a port outside 1-65535 or one in use). MLflow's telemetry is off unless
MLFLOW_DISABLE_TELEMETRY is set.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a Linux process gets when its parent dies


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("ui", help="the MLflow UI on 127.0.0.1 for the tracking backend")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    u.add_argument("--host", default=LOOPBACK,
                   help=f"interface to listen on (default {LOOPBACK}); MLflow has no authentication, so "
                        "anything else lets whoever reaches it read and change every run")
    u.add_argument("--allowed-hosts", metavar="HOST[:PORT],...",
                   help="Host headers the UI answers (MLflow's DNS-rebinding guard); default: the --host "
                        "name when it is one address or name, MLflow's localhost and private IPs otherwise")
    u.add_argument("--workers", type=int, default=1, help="MLflow server processes (default 1)")
    u.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from thoraxmae.study.tracking.uri import (
        check_tracking_uri,
        default_tracking_uri,
        mlflow_cli_defaults,
        sqlite_path,
    )

    mlflow_cli_defaults()
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is already an MLflow server: open it in a browser")
        print_study_links(uri, uri)
        return 0
    path = sqlite_path(uri)
    check_tracking_uri(uri, write=path is not None and not path.exists())  # MLflow creates a missing database
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", str(args.workers)]
    allowed = args.allowed_hosts or _default_allowed_hosts(args.host, args.port)
    if allowed:
        cmd += ["--allowed-hosts", allowed]
    if not _is_loopback(args.host):
        print(f"warning: MLflow has no authentication: anyone who can reach {args.host}:{args.port} can "
              "read, change and delete every run. On an untrusted network keep the default --host "
              f"{LOOPBACK} and tunnel instead (ssh -L {args.port}:{LOOPBACK}:{args.port} THIS_HOST). "
              "Host headers answered: "
              f"{allowed or 'localhost and private IPs (MLflow default)'}", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"MLflow UI for {uri} on http://{shown}:{args.port} (Ctrl-C stops it)")
    browse = LOOPBACK if args.host in ("0.0.0.0", "::") else shown
    print_study_links(uri, f"http://{browse}:{args.port}")
    return serve(cmd, {**os.environ, "MLFLOW_TRACKING_URI": uri})


def print_study_links(uri: str, base: str) -> None:
    """Each study's trials table on the UI at `base` (study/tracking/links.py), or that there is none."""
    from mlflow import MlflowClient

    from thoraxmae.study.tracking.links import study_links
    from thoraxmae.study.tracking.uri import mlflow_errors

    with mlflow_errors(uri):
        links = study_links(MlflowClient(tracking_uri=uri))
    if not links:
        print(f"no study in {uri} yet: `thoraxmae study run SPEC.yaml` or `thoraxmae demo` writes "
              "one", flush=True)
        return
    print("trials of each study (trial runs only, best first; add the knobs as columns with the Columns "
          "button):")
    for link in links:
        print(f"  {link.name}: {link.url(base)}")
    sys.stdout.flush()


def port_problem(host: str, port: int) -> str | None:
    """Why MLflow could not listen on host:port (a port outside 1-65535, one in use, a host that is not
    this machine's), or None: checked by listening on it briefly, as the server will (SO_REUSEADDR)."""
    if not 1 <= port <= 65535:
        return f"--port {port}: expected a port from 1 to 65535"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"--host {host}: cannot listen there ({exc.strerror or exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"--port {port}: {host}:{port} is in use (another `thoraxmae ui` or MLflow server?); "
                        f"choose a free port with --port")
            return f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})"
    return None


def _die_with_parent() -> Callable[[], None] | None:
    """For Popen's preexec_fn on Linux: the child gets SIGTERM when this process dies, however it dies
    (`kill -9` included), and stops its server as when a signal is forwarded to it. Elsewhere: None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # this process died before the call: nobody would send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


# Runs beside the server, in a session of its own: when its stdin reaches EOF (every writer gone: `thoraxmae
# ui`
# died, even by SIGKILL) it stops the server's process group, SIGTERM then SIGKILL after the grace period.
WATCHDOG = """import os, signal, sys, time
group, grace = int(sys.argv[1]), float(sys.argv[2])
sys.stdin.buffer.read()
for sig in (signal.SIGTERM, signal.SIGKILL):
    deadline = time.monotonic() + grace
    try:
        os.killpg(group, sig)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            os.killpg(group, 0)
    except ProcessLookupError:
        break
"""


def start_watchdog(group: int) -> tuple[subprocess.Popen, int]:
    """The WATCHDOG of process group `group`, and the pipe end this process holds open while it lives."""
    read, write = os.pipe()  # not inheritable: only this process holds `write`
    watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(group), str(STOP_GRACE_S)], stdin=read,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(read)
    return watchdog, write


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` until it ends, forwarding stop signals to it; then kill whatever it left running. The child
    runs in a process group of its own, which dies with this process even when this one is killed outright:
    the child gets SIGTERM at once (`_die_with_parent`), and a watchdog stops the whole group (the server's
    job runner and its consumers included)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent())  # noqa: PLW1509 (no threads yet)
    watchdog, guard = start_watchdog(proc.pid)
    started: set[tuple[int, str]] = set()

    def forward(signum: int, _frame) -> None:
        started.update(descendants(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:  # left through an exception: stop it like a signal would
            forward(signal.SIGTERM, None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE_S)
        _kill_leftovers(started | set(descendants(proc.pid)))
        watchdog.kill()
        watchdog.wait()
        os.close(guard)
    return (0 if code in (0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT)
            else code)


def descendants(pid: int) -> list[tuple[int, str]]:
    """Live descendants of `pid` as (pid, start time): the start time tells a reused pid apart (Linux
    /proc; an empty list elsewhere)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # fields from the state on: state ppid pgrp ... starttime (19th)
                children.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields[19]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _alive(proc: tuple[int, str]) -> bool:
    try:
        fields = Path(f"/proc/{proc[0]}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == proc[1]


def _kill_leftovers(procs: set[tuple[int, str]]) -> None:
    deadline = time.monotonic() + STOP_GRACE_S
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    for proc in procs:
        if _alive(proc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc[0], signal.SIGKILL)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def _default_allowed_hosts(host: str, port: int) -> str | None:
    """None (MLflow's default: localhost and private IPs) on loopback or a wildcard address; else the one
    name it listens on, so a public address works without answering every Host name."""
    if _is_loopback(host) or host in ("0.0.0.0", "::"):
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port},{shown}"
