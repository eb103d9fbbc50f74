"""`thoraxmae study run|submit|status|resume|remove` (and `thoraxmae ui`, thoraxmae.cli.ui).

Every check that needs no Ray runs before Ray starts: the spec and the files it names (load_spec),
the tracking URI and the storage, no live driver of the study (study.driver), and the study's name (free
for `run`; for `resume`, with a whole Tune state: study.run.tune_state). `run` and
`resume` exit 0 only when at least one trial was scored and none was lost; a study whose every trial
failed exits 1 and shows the first trial's error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from thoraxmae.study.tracking.uri import mlflow_cli_defaults

TRACKING_HELP = "default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db"
FORCE_HELP = ("take the study over from a driver on another machine whose heartbeat stopped (it is dead); "
              "a driver that still beats is never taken over")


def register(sub: argparse._SubParsersAction) -> None:
    from thoraxmae.cli import ui as cli_ui
    from thoraxmae.study.tracking.lookup import storage_arg

    p = sub.add_parser("study", help="run, submit, inspect, resume and remove recipe studies")
    ssub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    q = ssub.add_parser("run", help="run a study on RAY_ADDRESS, or on a local Ray started for it")
    q.add_argument("spec", type=Path, help="study spec (YAML)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set search.num_samples=8 (repeatable)")
    q.add_argument("--force", action="store_true", help=FORCE_HELP)
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
    q.add_argument("--tracking-uri", help=TRACKING_HELP)
    q.set_defaults(func=cmd_status)

    q = ssub.add_parser("resume", help="continue a study whose driver stopped (Tuner.restore)")
    q.add_argument("name")
    q.add_argument("--tracking-uri", help=f"where to find the study's spec; {TRACKING_HELP}")
    q.add_argument("--storage-path", type=storage_arg,
                   help="read the spec from Tune's folder (a folder or s3://...) instead of MLflow")
    q.add_argument("--force", action="store_true", help=FORCE_HELP)
    q.add_argument("--from-last-good", action="store_true",
                   help="when Tune's state is damaged: put it aside and resume from the last whole copy kept")
    q.set_defaults(func=cmd_resume)

    q = ssub.add_parser("remove", help="delete a study (or what a failed start left): its MLflow runs and "
                                       "Tune folder")
    q.add_argument("name")
    q.add_argument("--tracking-uri", help=TRACKING_HELP)
    q.add_argument("--storage-path", type=storage_arg,
                   help="where its Tune folder is, a folder or s3://... (default: the storage_path of its "
                        "spec)")
    q.add_argument("--yes", action="store_true", help="delete; without it, only list what would be deleted")
    q.set_defaults(func=cmd_remove)

    from thoraxmae.cli import confirm as cli_confirm

    cli_confirm.register(ssub)
    cli_ui.register(sub)


def cmd_run(args: argparse.Namespace) -> int:
    from thoraxmae.study.driver import check_driver
    from thoraxmae.study.spec.load import load_spec
    from thoraxmae.study.tracking.lookup import check_new_study

    mlflow_cli_defaults()
    spec = load_spec(args.spec, args.overrides)  # the spec and the files it names
    check_driver(spec.storage_path, spec.name, args.force)  # no live driver of this study
    check_new_study(spec)  # tracking URI and storage writable, name free there and in Tune's folder
    warn_store_detail(spec)
    return _run(spec, resume=False, force=args.force)


def warn_store_detail(spec, phases: tuple[str, ...] | None = None, searched: bool = True) -> None:
    """Before Ray: one `warning:` line per store smaller than the spec's smallest crops need
    (study.spec.detail)."""
    from thoraxmae.study.spec.detail import store_detail_warnings

    for line in store_detail_warnings(spec, phases, searched):
        print(f"warning: {line}", file=sys.stderr)


def cmd_resume(args: argparse.Namespace) -> int:
    from thoraxmae.study.driver import check_driver
    from thoraxmae.study.tracking.lookup import check_resumable, check_tracking_uri, locate_spec

    mlflow_cli_defaults()
    spec = locate_spec(args.name, args.tracking_uri, args.storage_path)
    check_tracking_uri(spec.tracking.uri, write=True)
    check_driver(spec.storage_path, spec.name, args.force)  # no live driver of this study
    check_resumable(spec, args.from_last_good)
    return _run(spec, resume=True, force=args.force, from_last_good=args.from_last_good)


def _run(spec, resume: bool, force: bool = False, from_last_good: bool = False) -> int:
    """Run or resume the checked study as its one driver (study.driver: the record and its heartbeat on the
    study's storage, removed at the end); a resumed study's Tune state is checked first (and restored from
    the last whole copy with `from_last_good`), before Ray, and a whole copy is kept while it runs
    (study.run.tune_state). The exit status."""
    from thoraxmae.study.driver import DriverLease
    from thoraxmae.study.run.tune_state import StateKeeper, check_state, restore_last_good

    with DriverLease.claim(spec.storage_path, spec.name, "study resume" if resume else "study run",
                           force) as lease:
        if lease.replaced:
            print(f"note: {lease.replaced}", file=sys.stderr)
        keeper = StateKeeper(spec.storage_path, spec.name)  # armed by run_study / resume_study
        if resume and spec.search.tournament is None:
            if from_last_good:
                print(restore_last_good(spec), file=sys.stderr)
            check_state(spec)  # one line and exit 2 for a damaged state: nothing has run
        lease.start(ticks=[keeper.tick])
        try:
            return _drive(spec, resume, keeper)
        finally:
            keeper.tick()


def _drive(spec, resume: bool, keeper=None) -> int:
    """Start (or join) Ray, run or resume the checked study, print its summary; the exit status."""
    from rich.console import Console

    from thoraxmae.cli.progress import StudyProgress, outcome
    from thoraxmae.study.run.ray_local import init_ray
    from thoraxmae.study.run.tune import resume_study, run_study

    console = Console()
    seconds = init_ray()
    console.print(f"Ray ready in {seconds:.1f} s; study [bold]{spec.name}[/] ({spec.stage}), "
                  f"tracking {spec.tracking.uri}, storage {spec.storage_path}")
    progress = StudyProgress(spec)
    if spec.search.tournament is not None:  # a recipe tournament (study/run/tournament.py)
        from thoraxmae.study.run.tournament import start_tournament, summary_lines

        for line in summary_lines(start_tournament(spec, callbacks=[progress], resume=resume)):
            console.print(line, highlight=False)
        return 0
    from mlflow.exceptions import MlflowException

    try:
        grid = (resume_study if resume else run_study)(spec, callbacks=[progress], keeper=keeper)
    except MlflowException as exc:  # the tracking store failed under the study (a full disk): a failed run
        return tracking_failed(spec, exc)
    counts = progress.counts()
    console.print(f"done: {counts['completed']} completed, {counts['pruned']} pruned, {counts['failed']} "
                  f"failed (this session); {len(grid)} trials in the study")
    print_trials_link(spec.tracking.uri, spec.name)
    if progress.first_report_s:
        fr = sorted(progress.first_report_s)
        console.print(f"trial start -> first epoch report: median {fr[len(fr) // 2]:.1f} s")
    result = outcome(spec, grid)
    best = _best(spec) or progress.best
    if best is not None and result.scored:
        console.print(f"best {spec.metric} ({spec.mode}): {best[0]:.4f} (trial {best[1]})")
    if result.failed:
        tid, line = result.failed[0]
        print(f"{len(result.failed)} of {result.total} trials failed; first error (trial {tid}): {line}",
              file=sys.stderr)
    if result.lost:
        print(f"{len(result.lost)} trials ended without a score or an error: "
              f"{', '.join(result.lost)}", file=sys.stderr)
    if not result.scored:
        print(f"error: study {spec.name}: no trial was scored ({spec.metric})", file=sys.stderr)
    if spec.confirm is not None and result.scored:  # the spec's `confirm:` section (study/run/confirm.py)
        from thoraxmae.cli.confirm import confirm_and_print

        confirmed = confirm_and_print(spec, spec.confirm.top, spec.confirm.seeds, spec.confirm.reference)
        return 0 if result.ok and confirmed == 0 else 1
    return 0 if result.ok else 1


def tracking_failed(spec, exc: Exception) -> int:
    """One line for a tracking store that failed while the study ran (e.g. `database or disk is full`); exit
    1.
    What was logged stays, and Tune's state too: `study resume` continues once the store is fixed."""
    lines = [line for line in str(getattr(exc, "message", "") or exc).strip().splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    print(f"error: study {spec.name}: the tracking store {spec.tracking.uri} failed ({reason}); the study "
          "stopped. What was logged is kept: fix the store (free space), then `thoraxmae study resume "
          f"{spec.name} --tracking-uri {spec.tracking.uri}`", file=sys.stderr)
    return 1


def _best(spec) -> tuple[float, str] | None:
    """(value, trial id) of the study's best trial as MLflow holds it (what `study status` shows)."""
    from thoraxmae.study.errors import SpecError
    from thoraxmae.study.tracking.lookup import study_status

    try:
        st = study_status(spec.name, spec.tracking.uri)
    except SpecError:
        return None
    return (st.best[1], st.best[0]) if st.best else None


def cmd_submit(args: argparse.Namespace) -> int:
    from thoraxmae.study.run.submit import check_address, follow_job, job_status, submit_study

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

    from thoraxmae.study.tracking.lookup import study_status

    mlflow_cli_defaults()
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
    else:
        console.print(f"best {st.metric} ({st.mode}): no trial scored yet")
    if st.first_error:
        console.print(f"first failed trial {st.first_error[0]}: {st.first_error[1]}", markup=False)
    print_trials_link(args.tracking_uri, args.name)
    return 0


def print_trials_link(uri: str | None, name: str) -> None:
    """The study's trials table in the MLflow UI, when the tracking URI is a server (it serves the UI)."""
    from thoraxmae.study.tracking.links import server_trials_url
    from thoraxmae.study.tracking.uri import default_tracking_uri

    link = server_trials_url(uri or default_tracking_uri(), name)
    if link:
        print(f"trials: {link}", flush=True)


def cmd_remove(args: argparse.Namespace) -> int:
    from thoraxmae.study.tracking.lookup import default_tracking_uri
    from thoraxmae.study.tracking.remove import find_leftovers, remove_study

    mlflow_cli_defaults()
    found = find_leftovers(args.name, args.tracking_uri or default_tracking_uri(), args.storage_path)
    for line in found.describe():
        print(f"  {line}")
    if not args.yes:
        print(f"nothing deleted: run again with --yes to delete study {args.name}", file=sys.stderr)
        return 1
    remove_study(found)
    print(f"study {args.name} removed; the name is free again")
    return 0
