"""A study never restarts silently. `study resume` of a study whose Tune state is damaged (random or cut-short
tuner.pkl, an experiment state cut by a full disk, ...) stops before Ray with one line naming the damaged file
and the way back: the last good copy of the state, kept as the study ran (`--from-last-good` puts the damaged
files aside and resumes from it). When Tune cannot restore a state that looks whole, the resumed study stops
before any trial instead of starting over (RestoreGuard). A finished study leaves no driver record behind.
Real studies: one tiny finished study for the module (real Ray, real SQLite MLflow), real tmpfs for a full
disk."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import CLI, subprocess_env, tiny_spec, write_spec
from tests.reliability.helpers import Driver
from tests.reliability.test_bad_outputs import tmpfs
from thoraxmae.cli import main
from thoraxmae.study import schema
from thoraxmae.study.run.tune_state import TuneState, current_files, read_kept
from thoraxmae.study.storage import StudyStorage
from thoraxmae.trainers import faults

NAME = "kept"


class RayStarted(Exception):
    pass


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    from thoraxmae.study.run import ray_local

    def tripwire(**_):
        raise RayStarted("Ray started")

    monkeypatch.setattr(ray_local, "init_ray", tripwire)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def run_cli(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, cwd=cwd,
                          env=subprocess_env(**env), timeout=900, check=False)


def small(store: Path, tmp: Path, name: str, num_samples: int = 1, **fields) -> Path:
    raw = tiny_spec(store, tmp, name, num_samples=num_samples)
    raw["finetune"].update(epochs=2, max_steps_per_epoch=2)
    raw.update(fields)
    return write_spec(raw, tmp / f"{name}.yaml")


@pytest.fixture(scope="module")
def finished(phantom_store, tmp_path_factory) -> tuple[Path, str]:
    """A finished one-trial study: (its Tune folder, tracking URI); its folder as it ended is kept beside
    it."""
    tmp = tmp_path_factory.mktemp("kept")
    done = run_cli("study", "run", str(small(phantom_store, tmp, NAME)), cwd=tmp)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    folder = tmp / "studies" / NAME
    shutil.copytree(folder, tmp / "as-it-ended")
    return folder, f"sqlite:///{tmp / 'mlflow.db'}"


@pytest.fixture()
def study(finished):
    """The finished study, put back as it ended after the test."""
    folder, uri = finished
    yield folder, uri
    shutil.rmtree(folder)
    shutil.copytree(folder.parent.parent / "as-it-ended", folder)


def newest(folder: Path, kind: str) -> Path:
    return Path(max(str(p) for p in folder.glob(f"{kind}-*")))


def trial_run_count(uri: str) -> int:
    client = MlflowClient(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_TRIAL}'"))


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_finished_study_leaves_no_driver_record_and_keeps_its_last_good_state(study):
    folder, _ = study
    storage = StudyStorage(folder.parent)
    assert not storage.driver(NAME).exists()
    kept = read_kept(storage.last_good_state(NAME))
    assert kept is not None and kept["trials"] == 1
    assert kept["files"] == TuneState.read(storage.study(NAME)).files  # the state as the study ended


DAMAGE = {
    "tuner-random": (lambda f: (f / "tuner.pkl").write_bytes(os.urandom(300)),
                     r"tuner\.pkl .*\(not a whole pickle"),
    "tuner-cut": (lambda f: (f / "tuner.pkl").write_bytes((f / "tuner.pkl").read_bytes()[:100]),
                  r"tuner\.pkl .*\(not a whole pickle"),
    "state-cut": (lambda f: (newest(f, "experiment_state")
                             .write_bytes(newest(f, "experiment_state").read_bytes()[:4096])),
                  r"experiment_state-[-\d_]+\.json .*\(not complete JSON"),
    "state-empty": (lambda f: newest(f, "experiment_state").write_bytes(b""),
                    r"experiment_state-[-\d_]+\.json .*\(empty\)"),
    "searcher-random": (lambda f: newest(f, "searcher-state").write_bytes(os.urandom(500)),
                        r"searcher-state-[-\d_]+\.pkl .*\(not a whole pickle"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_state_stops_resume_before_ray_naming_the_file_and_the_kept_copy(study, capsys, case):
    folder, uri = study
    damage, named = DAMAGE[case]
    damage(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    runs = trial_run_count(uri)
    assert main(["study", "resume", NAME, "--tracking-uri", uri]) == 2  # Ray never started (tripwire)
    line = one_line(capsys)
    assert re.match(rf"error: study `{NAME}`: Tune's state file {named}", line), line
    assert re.search(rf"; nothing was run\. The last whole state \(1 trial\(s\), saved [-\d: ]+\) is kept in "
                     rf"{folder}/thoraxmae_tune_state\.zip: resume from it with `thoraxmae study resume "
                     rf"{NAME} "
                     rf"--tracking-uri {re.escape(uri)} --from-last-good`", line), line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # nothing touched
    assert trial_run_count(uri) == runs


def test_from_last_good_puts_the_damaged_files_aside_and_resumes_from_the_kept_copy(study, capsys):
    folder, uri = study
    storage = StudyStorage(folder.parent)
    kept = read_kept(storage.last_good_state(NAME))
    (folder / "tuner.pkl").write_bytes(b"\x80\x05junk")
    with pytest.raises(RayStarted):  # restored and checked: the resume goes on to start Ray
        main(["study", "resume", NAME, "--tracking-uri", uri, "--from-last-good"])
    assert re.fullmatch(rf"Tune's state of study `{NAME}` restored from "
                        rf"{folder}/thoraxmae_tune_state\.zip \(saved "
                        r"[-\d: ]+, 1 trial\(s\)\); the damaged files are in "
                        rf"{folder}/thoraxmae_damaged-[-\d_]+",
                        capsys.readouterr().err.strip())
    assert {loc.name: loc.read_bytes() for loc in current_files(storage.study(NAME))} == kept["files"]
    (aside,) = folder.glob("thoraxmae_damaged-*")
    assert (aside / "tuner.pkl").read_bytes() == b"\x80\x05junk"  # put aside, not deleted
    assert not storage.driver(NAME).exists()  # the driver record went with the driver

    assert main(["study", "resume", NAME, "--tracking-uri", uri, "--from-last-good"]) == 2
    assert one_line(capsys).endswith("is the kept copy already; resume without --from-last-good")


def test_a_missing_tuner_pkl_names_the_kept_copy_which_restores_it(study, capsys):
    folder, uri = study
    good = (folder / "tuner.pkl").read_bytes()
    (folder / "tuner.pkl").unlink()
    assert main(["study", "resume", NAME, "--tracking-uri", uri]) == 2
    assert one_line(capsys) == (f"error: name: Tune's state of study `{NAME}` is missing from {folder} "
                                f"(tuner.pkl); a copy is kept in {folder}/thoraxmae_tune_state.zip: resume "
                                f"from it with `thoraxmae study resume {NAME} --tracking-uri {uri} "
                                "--from-last-good`")
    with pytest.raises(RayStarted):
        main(["study", "resume", NAME, "--tracking-uri", uri, "--from-last-good"])
    assert (folder / "tuner.pkl").read_bytes() == good


def test_without_a_kept_copy_the_line_says_the_study_cannot_be_resumed(study, capsys):
    folder, uri = study
    StudyStorage(folder.parent).last_good_state(NAME).unlink()
    (folder / "tuner.pkl").write_bytes(os.urandom(100))
    assert main(["study", "resume", NAME, "--tracking-uri", uri]) == 2
    assert one_line(capsys).endswith(
        "nothing was run. No whole copy of it was kept: the study cannot be resumed. Its runs stay in "
        f"MLflow; start it again under another name, or delete it with `thoraxmae study remove {NAME} "
        f"--tracking-uri {uri} --storage-path {folder.parent} --yes`")


@pytest.mark.integration
def test_a_state_tune_cannot_restore_stops_the_resumed_study_before_any_trial(study):
    """A whole-looking state that Tune's restore rejects: Tune would log "Failed to restore the run state" and
    start the study over; RestoreGuard stops it first, and the kept copy stays the good one."""
    folder, uri = study
    state = newest(folder, "experiment_state")
    raw = json.loads(state.read_text())
    raw["trial_data"] = [["{}", "{}"]]  # JSON, but no trial Tune can rebuild
    state.write_text(json.dumps(raw))
    zip_before = StudyStorage(folder.parent).last_good_state(NAME).read_bytes()
    runs = trial_run_count(uri)
    done = run_cli("study", "resume", NAME, "--tracking-uri", uri, cwd=folder.parent.parent)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert re.fullmatch(rf"error: study `{NAME}`: Tune could not restore its state \(.+\) and would start "
                        r"the study "
                        r"over; stopped before any trial ran\. The last whole state .* --from-last-good` "
                        r".*", err[-1])
    assert "Restarting experiment" not in done.stdout + done.stderr
    assert trial_run_count(uri) == runs
    assert StudyStorage(folder.parent).last_good_state(NAME).read_bytes() == zip_before
    assert not StudyStorage(folder.parent).driver(NAME).exists()


@pytest.mark.integration
def test_a_study_whose_disk_fills_ends_in_one_summary_and_its_resume_stops_before_any_trial(phantom_store,
                                                                                            tmp_path,
                                                                                         capsys):
    """The probe's N2: storage on a small file system that fills up mid-study. The trials fail, the driver's
    summary is printed (no EOFError from an empty error.pkl), exit 1; Tune's state, grown by the second trial,
    is cut short on the full disk. After space is freed, `study resume` names the damaged state and the kept
    copy, and runs nothing (it used to restart the study)."""
    with tmpfs(tmp_path / "disk", "size=64m") as disk:
        spec = small(phantom_store, tmp_path, "full", num_samples=2, storage_path=str(disk / "studies"))
        storage = StudyStorage(disk / "studies")
        hold = faults.env(faults.hold_entry("worker", "*", 1, tmp_path / "hold"))
        driver = Driver(["study", "run", str(spec)], tmp_path, tmp_path / "run.log", **hold)
        try:
            driver.wait_until(lambda: (tmp_path / "hold" / "worker").exists(), "the trial's first epoch")
            driver.wait_until(lambda: read_kept(storage.last_good_state("full")) is not None, "a kept state",
                              timeout=120, poll=0.5)
            with contextlib.suppress(OSError), (disk / "filler").open("wb") as filler:  # the disk fills up
                while True:
                    filler.write(b"\0" * 65536)
            # each trial's first epoch goes on, its checkpoint meets a full disk
            while driver.proc.poll() is None:
                with contextlib.suppress(FileNotFoundError):
                    (tmp_path / "hold" / "worker").unlink()
                time.sleep(0.2)
            rc = driver.wait(timeout=600)
        finally:
            driver.kill()
        out = driver.log.read_text()
        assert rc == 1, out[-3000:]
        assert not re.search(r"^EOFError", out, re.MULTILINE), out[-3000:]  # the summary's old traceback
        assert re.search(r"2 of 2 trials failed; first error \(trial \w+\): ", out), out[-3000:]
        assert "error: study full: no trial was scored (val/mauc)" in out
        assert not storage.driver("full").exists()
        (disk / "filler").unlink()  # space freed
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        runs = trial_run_count(uri)
        problem = TuneState.read(storage.study("full")).problem()
        code = main(["study", "resume", "full", "--tracking-uri", uri])  # Ray is a tripwire
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert problem is not None, "the full disk left Tune's state whole (nothing to refuse)"
        assert code == 2 and re.match(rf"error: study `full`: Tune's state file {re.escape(problem[0])} in "
                                      rf"{disk}/studies/full is damaged \(.*\); nothing was run\. The last "
                                      r"whole "
                                      rf"state \(\d trial\(s\), saved .*--from-last-good`", line), line
        assert trial_run_count(uri) == runs
