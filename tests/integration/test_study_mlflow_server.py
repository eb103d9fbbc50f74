"""The run-schema writer against a real `mlflow server` (HTTP, proxied artifacts), not only SQLite."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import write_store_manifest
from thoraxmae.study import schema
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.lookup import locate_spec, study_status
from thoraxmae.study.tracking.writer import StudyTracker

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           f"sqlite:///{tmp_path / 'srv.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its gunicorn/uvicorn workers: our own group
        proc.wait(timeout=30)


def test_study_runs_are_written_and_read_through_a_server(mlflow_server, tmp_path):
    write_store_manifest(tmp_path)
    raw = {"name": "srv", "stage": "finetune", "data": {"store": str(tmp_path)},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "finetune": {"epochs": 2, "warmup_epochs": 0},
           "search": {"num_samples": 1,
                      "space": {"finetune.drop_path": {"type": "float", "low": 0.0, "high": 0.3}}},
           "tracking": {"uri": mlflow_server}, "storage_path": str(tmp_path / "studies")}
    spec = with_defaults(parse_spec(raw))
    tracker = StudyTracker(spec)
    parent = tracker.start_study()
    run = tracker.start_trial("t1", {"finetune.drop_path": "0.1"})
    tracker.log_epoch(run, {schema.M_VAL_MAUC: 0.6, schema.val_auc("Edema"): 0.7}, 1)
    tracker.log_epoch(run, {schema.M_VAL_MAUC: 0.65, schema.val_auc("Edema"): 0.72}, 2)
    tracker.log_auc_table(run, schema.M_VAL_MAUC, "max")
    tracker.end_trial(run, schema.STATUS_COMPLETED)
    tracker.end_study()

    st = study_status("srv", mlflow_server)
    assert st.counts[schema.STATUS_COMPLETED] == 1 and st.best[:2] == ("t1", 0.65)
    assert locate_spec("srv", mlflow_server, None) == spec  # spec.yaml came back through the artifact proxy
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    arts = [a.path for a in tracker.client.list_artifacts(run)]
    assert arts == [schema.ARTIFACT_AUC_TABLE]
