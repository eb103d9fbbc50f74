"""One live driver per study (study.driver): a second `study run` or `study resume` of a study whose driver
is running is refused in one line naming it (host, pid, heartbeat), before Ray; a driver known dead (this
machine, process gone) is taken over; a silent one from another machine only with --force, and a beating one
never. Real processes, a real local file system and a real S3 server (moto); Ray is a tripwire here."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.study_helpers import CLI, subprocess_env, tiny_spec
from tests.reliability.test_bad_inputs import spec_dict, write_spec
from thoraxmae.cli import main
from thoraxmae.study import driver, schema
from thoraxmae.study.driver import DriverBusy, DriverLease, DriverRecord, check_driver, read_record
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.writer import StudyTracker
from thoraxmae.trainers import faults

pytestmark = pytest.mark.usefixtures("no_ray")  # tests/reliability/conftest.py


def write_raw(path: Path, raw: dict) -> Path:
    return write_spec(path, raw)


def started(work: Path, name: str) -> tuple[Path, str]:
    """A study as its driver leaves it at the start: its spec file, and its parent run in MLflow (with
    spec.yaml). Returns (spec file, tracking URI)."""
    raw = spec_dict(work, name=name)
    StudyTracker(with_defaults(parse_spec(raw))).start_study()
    return write_spec(work / f"{name}.yaml", raw), raw["tracking"]["uri"]


def refusal(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- a real second driver
# ---------------------------------------------------------------------------------------
def test_a_second_driver_of_a_running_study_is_refused_then_a_dead_one_is_taken_over(phantom_store, work,
                                                                                     capsys):
    spec = write_raw(work / "busy.yaml", tiny_spec(phantom_store, work, "busy", num_samples=1))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    record = StudyStorage(work / "studies").driver("busy")
    first = subprocess.Popen([*CLI, "study", "run", str(spec)], cwd=work,
                             env=subprocess_env(**faults.env(faults.hold_entry("worker", "*", 1,
                                                                               work / "hold"))),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # before Ray starts
        wait_for(lambda: read_record(record) is not None, first, "the first driver's claim")
        live = read_record(record)
        assert (live.pid, live.host, live.command) == (first.pid, socket.gethostname(), "study run")
        assert main(["study", "run", str(spec)]) == 2
        assert_names_the_live_driver(refusal(capsys), first.pid, "study run")
        wait_for(lambda: uri_has_study(uri, "busy"), first, "the study's parent run")  # Ray and Tune are up
        for extra in ([], ["--force"]):
            assert main(["study", "resume", "busy", "--tracking-uri", uri, *extra]) == 2
            assert_names_the_live_driver(refusal(capsys), first.pid, "study run")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started die at once
        first.wait(30)
    assert read_record(record).pid == first.pid  # kill -9 left the record
    # known dead: no --force needed
    with DriverLease.claim(work / "studies", "busy", "study resume") as lease:
        assert re.fullmatch(rf"taking over study `busy` from its dead driver pid {first.pid} on "
                            r".*\(`thoraxmae study "
                            rf"run`, started .*, last heartbeat \d+ s ago\): pid {first.pid} has "
                            r"exited", lease.replaced)
        assert read_record(record).token == lease.record.token
    assert not record.exists()  # released at the end


def wait_for(ready, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the first driver ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)


def uri_has_study(uri: str, name: str) -> bool:
    """Does the study's parent run exist yet? Read straight from SQLite, read-only: an MLflow client would
    migrate the database while the driver creates it."""
    import sqlite3

    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("select count(*) from tags where key = ? and value = ?",
                              (schema.TAG_STUDY, name)).fetchone()
    except sqlite3.Error:
        return False
    return rows[0] > 0


def assert_names_the_live_driver(line: str, pid: int, command: str) -> None:
    assert re.fullmatch(rf"error: study `busy` is running: driver pid {pid} on "
                        rf"{re.escape(socket.gethostname())} "
                        rf"\(`thoraxmae {command}`, started [-\d: ]+, last heartbeat \d+ s ago\); wait for "
                        r"it to end "
                        rf"or stop it \(kill {pid} on .*\)\. A second driver would run its trials twice; "
                        r"--force "
                        rf"takes over only a driver whose heartbeat is older than 60 s", line), line


# --- records of other machines
# ------------------------------------------------------------------------------------
def foreign(work: Path, name: str, age_s: float) -> DriverRecord:
    """The record a driver on another machine left, its heartbeat `age_s` seconds old."""
    mine = DriverRecord.mine("study run")
    record = replace(mine, host="node-7", machine="other-boot/pid:[1]", pid=4242, pid_start="1",
                     heartbeat=time.time() - age_s)
    StudyStorage(work / "studies").driver(name).write_text(record.dumps())
    return record


def test_a_beating_driver_on_another_machine_is_never_taken_over(work, capsys):
    _, uri = started(work, "remote")
    capsys.readouterr()  # MLflow's database set-up lines
    foreign(work, "remote", age_s=5)
    for extra in ([], ["--force"]):
        assert main(["study", "resume", "remote", "--tracking-uri", uri, *extra]) == 2
        assert "error: study `remote` is running: driver pid 4242 on node-7" in refusal(capsys)


def test_a_silent_driver_on_another_machine_is_taken_over_only_with_force(work, capsys):
    foreign(work, "quiet", age_s=600)
    with pytest.raises(DriverBusy, match=r"study `quiet` has a driver that stopped beating: pid 4242 on "
                                         r"node-7 "
                                         r"\(`thoraxmae study run`, .*last heartbeat 600 s ago\); if it is "
                                         r"dead .*"
                                         r"take over with --force"):
        check_driver(work / "studies", "quiet")
    with DriverLease.claim(work / "studies", "quiet", "study resume", force=True) as lease:
        assert lease.replaced.startswith("taking over study `quiet` from driver pid 4242 on node-7")
        assert read_record(StudyStorage(work / "studies").driver("quiet")).pid == os.getpid()


def test_a_machine_that_restarted_ran_no_driver_since(work):
    loc = StudyStorage(work / "studies").driver("reboot")
    mine = DriverRecord.mine("study run")
    loc.write_text(replace(mine, machine="an-earlier-boot/" + mine.machine.split("/", 1)[-1], pid=1).dumps())
    with DriverLease.claim(work / "studies", "reboot", "study resume") as lease:
        assert lease.replaced.endswith(f"{socket.gethostname()} has restarted since")


def test_a_record_no_driver_wrote_names_no_driver(work):
    loc = StudyStorage(work / "studies").driver("junk")
    loc.write_text("not json")
    with DriverLease.claim(work / "studies", "junk", "study run") as lease:
        assert lease.replaced is None and read_record(loc).token == lease.record.token


# --- the heartbeat
# ---------------------------------------------------------------------------------------------
def test_the_heartbeat_advances_and_stops_when_taken_over_and_release_keeps_the_new_owner(work, monkeypatch):
    monkeypatch.setattr(driver, "HEARTBEAT_S", 0.05)
    ticks = []
    lease = DriverLease.claim(work / "studies", "beat", "study run")
    first = lease.record.heartbeat
    lease.start(ticks=[lambda: ticks.append(1)])
    deadline = time.monotonic() + 10
    while read_record(lease.loc).heartbeat == first or not ticks:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.02)
    other = replace(lease.record, token="someone-else", pid=4242)
    lease.loc.write_text(other.dumps())  # taken over with --force elsewhere
    while not lease.lost:
        assert time.monotonic() < deadline, "the takeover went unnoticed"
        time.sleep(0.02)
    time.sleep(0.2)
    assert read_record(lease.loc) == other  # the old driver stopped writing
    lease.release()
    assert read_record(lease.loc) == other  # and leaves the new driver's record alone


def test_two_drivers_racing_for_a_study_one_wins(work):
    first = DriverLease.claim(work / "studies", "race", "study run")
    with pytest.raises(DriverBusy, match=rf"study `race` is running: driver pid {os.getpid()}"):
        DriverLease.claim(work / "studies", "race", "study run")
    first.release()
    assert not first.loc.exists()


# --- an object store ----------------------------------------------------------------------------------------
def test_the_driver_record_lives_on_an_object_store_too(s3, monkeypatch):
    monkeypatch.setattr(driver, "CLAIM_SETTLE_S", 0.2)
    root = "s3://thoraxmae-test/one-driver"
    lease = DriverLease.claim(root, "s3study", "study run")
    loc = StudyStorage(root).driver("s3study")
    assert json.loads(loc.read_text())["pid"] == os.getpid()
    with pytest.raises(DriverBusy, match=r"study `s3study` is running"):
        check_driver(root, "s3study", force=True)
    lease.release()
    assert not loc.exists()
    check_driver(root, "s3study")  # free again


def test_a_running_study_is_not_removed(work, capsys):
    _, uri = started(work, "alive")
    capsys.readouterr()
    folder = work / "studies" / "alive"
    folder.mkdir(parents=True)
    (folder / "thoraxmae_spec.yaml").write_text("name: alive\n")  # a study folder, as a started study has
    with DriverLease.claim(work / "studies", "alive", "study run"):
        assert main(["study", "remove", "alive", "--tracking-uri", uri, "--yes"]) == 2
        assert refusal(capsys).startswith(f"error: study `alive` is running: driver pid {os.getpid()}")
        assert (folder / "thoraxmae_spec.yaml").exists()
    assert main(["study", "remove", "alive", "--tracking-uri", uri, "--yes"]) == 0  # its driver ended
    assert not folder.exists()
