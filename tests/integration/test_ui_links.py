"""Links to a study's trials table (study/tracking/links.py): `thoraxmae ui` prints one per study in the
store, or says there is none; `study status` and `report` print the same link when the tracking URI is a
server. A real `mlflow server` and the real CLI; the link opened in a browser:
tests/integration/test_browser.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_store_manifest
from tests.integration import browser
from tests.integration.study_helpers import free_ports, stop_process, subprocess_env
from tests.integration.test_study_mlflow_server import mlflow_server  # noqa: F401  (the fixture)
from thoraxmae.cli import main
from thoraxmae.study import schema
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.links import trials_url
from thoraxmae.study.tracking.writer import StudyTracker

pytestmark = pytest.mark.integration


def cli(capsys, *args: str) -> str:
    """The real `thoraxmae` main, in this process (no interpreter start per command); its stdout."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, f"{args}\n{out[-3000:]}\n{err[-3000:]}"
    return out


def test_the_trials_link_filters_trials_and_sorts_by_the_metric():
    assert trials_url("http://h:5000/", "7", "pretrain/loss", "min") == (
        "http://h:5000/#/experiments/7/runs?searchFilter=tags.%60thoraxmae.role%60%20%3D%20%27trial%27"
        "&orderByKey=metrics.%60pretrain%2Floss%60&orderByAsc=true")
    assert trials_url("http://h:5000", "7", "val/mauc", "max").endswith("orderByAsc=false")


def test_ui_on_a_store_without_a_study_says_so(tmp_path):
    """Read what `thoraxmae ui` says before its server is up; then stop it (and the server it started)."""
    (port,) = free_ports(1)
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("thoraxmae")), "ui", "--tracking-uri", uri,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True,
                            env=subprocess_env(), start_new_session=True)
    said = []
    try:
        for line in proc.stdout:  # ends when it exits; the study line comes before the server starts
            said.append(line)
            if line.startswith(("no study", "trials of each study")):
                break
    finally:
        stop_process(proc)
    text = "".join(said)
    assert f"no study in {uri} yet" in text, text
    assert "Traceback" not in text


def test_server_commands_print_the_study_trials_link(mlflow_server, tmp_path, capsys, monkeypatch):  # noqa: F811
    write_store_manifest(tmp_path / "store")
    raw = {"name": "linked", "stage": "finetune", "data": {"store": str(tmp_path / "store")},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "finetune": {"epochs": 2, "warmup_epochs": 0},
           "search": {"num_samples": 1,
                      "space": {"finetune.drop_path": {"type": "float", "low": 0.0, "high": 0.3}}},
           "tracking": {"uri": mlflow_server}, "storage_path": str(tmp_path / "studies")}
    tracker = StudyTracker(with_defaults(parse_spec(raw)))
    tracker.start_study()
    run = tracker.start_trial("t1", {"finetune.drop_path": "0.1"})
    tracker.log_epoch(run, {schema.M_VAL_MAUC: 0.6}, 1)
    tracker.end_trial(run, schema.STATUS_COMPLETED)
    tracker.end_study()
    link = trials_url(mlflow_server, tracker.experiment_id(), schema.M_VAL_MAUC, "max")

    assert f"trials: {link}\n" in cli(capsys, "study", "status", "linked", "--tracking-uri", mlflow_server)
    assert f"  linked: {link}\n" in cli(capsys, "ui", "--tracking-uri", mlflow_server)
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    report = cli(capsys, "report", "linked", "--tracking-uri", mlflow_server, "--out",
                 str(tmp_path / "report"),
                 "--bootstrap", "0", "--no-log")
    assert f"trials: {link}\n" in report
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # the report command keeps MLflow's telemetry off


def test_the_printed_link_shows_the_trials_by_name_best_first(tmp_path):
    """`thoraxmae ui` on a store with a study (written by the run-schema writer, no Ray): the link it
    prints, rendered by headless Chromium, lists the study's trial runs by name, best val/mauc first,
    and nothing else (the study run itself is filtered out)."""
    browser.chromium()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    write_store_manifest(tmp_path / "store")
    raw = {"name": "browsed", "stage": "finetune", "data": {"store": str(tmp_path / "store")},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "finetune": {"epochs": 1, "warmup_epochs": 0},
           "search": {"num_samples": 3,
                      "space": {"finetune.drop_path": {"type": "float", "low": 0.0, "high": 0.3}}},
           "tracking": {"uri": uri}, "storage_path": str(tmp_path / "studies")}
    tracker = StudyTracker(with_defaults(parse_spec(raw)))
    tracker.start_study()
    for trial_id, mauc in (("t1", 0.61), ("t2", 0.83), ("t3", 0.72)):
        run = tracker.start_trial(trial_id, {"finetune.drop_path": "0.1"})
        tracker.log_epoch(run, {schema.M_VAL_MAUC: mauc}, 1)
        tracker.end_trial(run, schema.STATUS_COMPLETED)
    tracker.end_study()
    (port,) = free_ports(1)
    with browser.serving_ui(uri, port, tmp_path / "ui.log", env=subprocess_env()) as base:
        said = (tmp_path / "ui.log").read_text()
        link = trials_url(base, tracker.experiment_id(), schema.M_VAL_MAUC, "max")
        assert f"  browsed: {link}\n" in said, said
        names = ["browsed-t2", "browsed-t3", "browsed-t1"]  # best val/mauc first
        dom = browser.dom_showing(link, names)
    text = re.sub(r"<[^>]+>", " ", dom)
    assert all(n in text for n in names), f"{names} not all on the page the link opens"
    assert [text.index(n) for n in names] == sorted(text.index(n) for n in names), "not best val/mauc first"
    assert "3 matching runs" in re.sub(r"<[^>]+>", "", dom)
