"""`thoraxmae ui`: the MLflow UI for the tracking backend, on 127.0.0.1 unless asked otherwise.

The MLflow server runs as this process's child; SIGTERM, SIGINT and SIGHUP are forwarded to it (MLflow
forwards them to its uvicorn server, whose workers and job runner stop with it) and this process waits
for it, so stopping `thoraxmae ui` stops everything it started; any process of the server still alive
then is killed. MLflow's telemetry is off unless MLFLOW_DISABLE_TELEMETRY is set.
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("ui", help="the MLflow UI on 127.0.0.1 for the tracking backend")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    u.add_argument("--host", default=LOOPBACK,
                   help=f"interface to listen on (default {LOOPBACK}); MLflow has no authentication, so anything "
                        "else lets whoever reaches it read and change every run")
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
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", str(args.workers)]
    allowed = args.allowed_hosts or _default_allowed_hosts(args.host, args.port)
    if allowed:
        cmd += ["--allowed-hosts", allowed]
    if not _is_loopback(args.host):
        print(f"warning: MLflow has no authentication: anyone who can reach {args.host}:{args.port} can read, "
              f"change and delete every run. On an untrusted network keep the default --host {LOOPBACK} and "
              f"tunnel instead (ssh -L {args.port}:{LOOPBACK}:{args.port} THIS_HOST). "
              f"Host headers answered: {allowed or 'localhost and private IPs (MLflow default)'}", file=sys.stderr)
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
        print(f"no study in {uri} yet: `thoraxmae study run SPEC.yaml` or `thoraxmae demo` writes one", flush=True)
        return
    print("trials of each study (trial runs only, best first; add the knobs as columns with the Columns button):")
    for link in links:
        print(f"  {link.name}: {link.url(base)}")
    sys.stdout.flush()


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` until it ends, forwarding stop signals to it; then kill whatever it left running."""
    proc = subprocess.Popen(cmd, env=env)
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
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT) else code


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
