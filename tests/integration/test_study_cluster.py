"""Operations: `study submit` to a real `ray start --head` (token auth on), and `study resume` after
the driver is killed mid-study. Every process is started here and stopped by its own PID/group."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.study_helpers import (
    CLI,
    free_ports,
    history,
    stop_process,
    subprocess_env,
    tiny_spec,
    trial_runs,
    write_spec,
)
from thoraxmae.study import schema

pytestmark = pytest.mark.integration


@pytest.fixture()
def ray_head(tmp_path):
    """A head node on free ports with token authentication (its own token), its own temp dir so no
    other `ray.init()` on this machine finds it, and 2 CPUs."""
    gcs, dash, agent, client, metrics = free_ports(5)
    token = secrets.token_hex(32)
    # RAY_ADDRESS names this head in its processes' environment, so Train's placement-group cleaner
    # asks this cluster (not another Ray on the machine) whether a stopped trial's controller is gone
    import ray

    address = f"{ray.util.get_node_ip_address()}:{gcs}"
    env = subprocess_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_ADDRESS=address)
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--dashboard-agent-listen-port",
           str(agent), "--ray-client-server-port", str(client), "--metrics-export-port", str(metrics),
           "--num-cpus", "2", "--temp-dir", temp_dir, "--block"]
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 (outlives the Popen call; closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        # ready when `ray start` says so (the dashboard's /api/version answers 401 under token auth)
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert proc.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the head did not start in 120 s"
            time.sleep(0.5)
        yield url, {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    finally:
        stop_process(proc)
        log.close()


def test_submit_runs_a_study_on_a_cluster(ray_head, phantom_store, tmp_path):
    url, env = ray_head
    spec = write_spec(tiny_spec(phantom_store, tmp_path, "submitted", num_samples=2, concurrent=2),
                      tmp_path / "s.yaml")

    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    refused = subprocess.run([*CLI, "study", "submit", str(spec), "--address", url], env=no_token,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "token authentication" in refused.stderr

    done = subprocess.run([*CLI, "study", "submit", str(spec), "--address", url, "--follow"], env=env,
                          capture_output=True, text=True, timeout=400, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job_id = done.stdout.splitlines()[0]
    assert job_id.startswith("thoraxmae-submitted-") and f"job {job_id}: SUCCEEDED" in done.stdout
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "submitted")
    assert len(runs) == 2
    assert {r.data.tags[schema.TAG_STATUS] for r in runs} <= {schema.STATUS_COMPLETED, schema.STATUS_PRUNED}


def test_resume_after_the_driver_is_killed(phantom_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(tiny_spec(phantom_store, tmp_path, "resumed", num_samples=4), tmp_path / "s.yaml")
    env = subprocess_env()
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 (outlives the Popen call; closed below)
    driver = subprocess.Popen([*CLI, "study", "run", str(spec)], env=env, stdout=log,
                              stderr=subprocess.STDOUT,
                              cwd=tmp_path, start_new_session=True)
    finished: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(1)
            runs = trial_runs(uri, "resumed")
            finished = {r.data.tags[schema.TAG_TRIAL_ID]: r.info.run_id for r in runs
                        if r.data.tags.get(schema.TAG_STATUS) != schema.STATUS_RUNNING}
            if len(finished) >= 2:
                break
        assert driver.poll() is None, "the study ended before it could be killed"
        assert len(finished) >= 2, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait(timeout=30)
        log.close()
    before = {r.data.tags[schema.TAG_TRIAL_ID] for r in trial_runs(uri, "resumed")}

    resumed = subprocess.run([*CLI, "study", "resume", "resumed", "--tracking-uri", uri], env=env,
                             capture_output=True, text=True, timeout=400, cwd=tmp_path, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    runs = trial_runs(uri, "resumed")
    ids = [r.data.tags[schema.TAG_TRIAL_ID] for r in runs]
    assert len(runs) == 4 and len(set(ids)) == 4  # exactly num_samples, no trial logged twice
    assert before <= set(ids)
    assert all(r.data.tags[schema.TAG_STATUS] in (schema.STATUS_COMPLETED, schema.STATUS_PRUNED)
               for r in runs)
    by_id = {r.data.tags[schema.TAG_TRIAL_ID]: r.info.run_id for r in runs}
    for trial_id, run_id in finished.items():
        assert by_id[trial_id] == run_id  # a finished trial kept its run and was not re-run
        steps = [s for s, _ in history(uri, run_id, schema.M_VAL_MAUC)]
        assert steps == sorted(set(steps))
    status = subprocess.run([*CLI, "study", "status", "resumed", "--tracking-uri", uri], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert status.returncode == 0 and "4/4 trials finished" in status.stdout
