"""`thoraxmae study run|submit|status|resume` and `thoraxmae ui`."""
from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

LOOPBACK = "127.0.0.1"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run, submit, inspect and resume recipe studies")
    ssub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    q = ssub.add_parser("run", help="run a study on RAY_ADDRESS, or on a local Ray started for it")
    q.add_argument("spec", type=Path, help="study spec (YAML)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set search.num_samples=8 (repeatable)")
    q.set_defaults(func=cmd_run)

    q = ssub.add_parser("submit", help="submit a study to a Ray cluster as a Ray job")
    q.add_argument("spec", type=Path)
    q.add_argument("--address", required=True, help="the cluster's dashboard URL, e.g. http://HEAD:8265")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    q.add_argument("--python", default="python", help="python executable on the cluster (default: python)")
    q.set_defaults(func=cmd_submit)

    q = ssub.add_parser("status", help="trials by status and the best so far (from MLflow)")
    q.add_argument("name")
    q.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    q.set_defaults(func=cmd_status)

    q = ssub.add_parser("resume", help="continue a study whose driver stopped (Tuner.restore)")
    q.add_argument("name")
    q.add_argument("--tracking-uri", help="where to find the study's spec; default as for status")
    q.add_argument("--storage-path", type=Path, help="read the spec from Tune's folder instead of MLflow")
    q.set_defaults(func=cmd_resume)

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


def cmd_run(args: argparse.Namespace) -> int:
    from thoraxmae.study.spec import load_spec

    spec = load_spec(args.spec, args.overrides)  # every check before Ray starts
    return _run(spec, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    from thoraxmae.study.resume import locate_spec

    spec = locate_spec(args.name, args.tracking_uri, args.storage_path)
    return _run(spec, resume=True)


def _run(spec, resume: bool) -> int:
    from rich.console import Console

    from thoraxmae.study.progress import StudyProgress
    from thoraxmae.study.tune import init_ray, resume_study, run_study

    console = Console()
    seconds = init_ray()
    console.print(f"Ray ready in {seconds:.1f} s; study [bold]{spec.name}[/] ({spec.stage}), "
                  f"tracking {spec.tracking.uri}, storage {spec.storage_path}")
    progress = StudyProgress(spec)
    grid = (resume_study if resume else run_study)(spec, callbacks=[progress])
    counts = progress.counts()
    console.print(f"done: {counts['completed']} completed, {counts['pruned']} pruned, {counts['failed']} failed "
                  f"(this session); {len(grid)} trials in the study")
    if progress.first_report_s:
        fr = sorted(progress.first_report_s)
        console.print(f"trial start -> first epoch report: median {fr[len(fr) // 2]:.1f} s")
    if progress.best:
        console.print(f"best {spec.metric}: {progress.best[0]:.4f} (trial {progress.best[1]})")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from thoraxmae.study.submit import check_address, follow_job, job_status, submit_study

    address = check_address(args.address)
    job_id = submit_study(args.spec, address, args.overrides, python=args.python)
    print(job_id)
    if not args.follow:
        return 0
    for text in follow_job(address, job_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    status = job_status(address, job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from thoraxmae.study.resume import study_status

    st = study_status(args.name, args.tracking_uri)
    console = Console()
    console.print(f"study {st.name} ({st.stage}): {st.finished}/{st.num_samples} trials finished; "
                  f"parent run {st.parent_status}")
    table = Table()
    for s in st.counts:
        table.add_column(s, justify="right")
    table.add_row(*(str(n) for n in st.counts.values()))
    console.print(table)
    if st.best:
        trial_id, value, knobs = st.best
        console.print(f"best {st.metric} ({st.mode}): {value:.4f}, trial {trial_id}")
        for k, v in knobs.items():
            console.print(f"  {k} = {v}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from thoraxmae.study.resume import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is already an MLflow server: open it in a browser")
        return 0
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
    return subprocess.call(cmd, env={**os.environ, "MLFLOW_TRACKING_URI": uri})


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
