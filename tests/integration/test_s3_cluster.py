"""A pipeline study on a two-node Ray cluster whose store, storage and checkpoints are only on an S3 endpoint
(moto's server on 127.0.0.1): no node shares a file system with another for the study, each node has its own
cache. The driver is killed mid-study (kill -9 of its process group) and `study resume` finishes it from S3.

The cluster is a real `ray start --head` (token auth, free ports, its own --temp-dir) and a second
`ray start --address` node with its own --temp-dir (Ray 2.60 honours it on a non-head node: its session
folder, logs and spilling are its own), its own THORAXMAE_CACHE_DIR and 1 CPU each, so the study's two
concurrent trials (1 worker of 1 CPU each) run one per node. Ray's workers take their environment from
the `ray start` that started their node, so the S3 endpoint and credentials are given to both nodes."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

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
from tests.s3_server import BUCKET, moto_server
from thoraxmae.datasets.remote import upload_store
from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema
from thoraxmae.study.registry import ENTRY_FILE
from thoraxmae.study.run.pipeline import CHECKPOINT_FILE
from thoraxmae.study.run.trial import FINAL_MARKER
from thoraxmae.study.storage import REGISTRY_DIR
from thoraxmae.study.tracking.lookup import SPEC_FILE

pytestmark = pytest.mark.integration
RAY = str(Path(sys.executable).parent / "ray")
NODE_MEMORY = str(100 * 1024**2)  # object store per node: the study passes no large objects
NODES = ("head", "worker")
PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 2, 2


@dataclass
class Cluster:
    address: str  # the head's GCS
    env: dict[str, str]  # a driver's: RAY_ADDRESS, token, S3, its own cache
    temp_dirs: list[Path]  # each node's --temp-dir


def _active_nodes(address: str, env: dict[str, str]) -> int:
    out = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True,
                         timeout=60, check=False).stdout
    active = out.partition("Active:")[2].partition("Pending:")[0]
    return len(re.findall(r"^\s*1 node_", active, re.MULTILINE))


@pytest.fixture()
def s3(tmp_path) -> Iterator[dict[str, str]]:
    with moto_server(tmp_path / "moto.log") as env:
        yield env


@pytest.fixture()
def s3_cluster(s3, tmp_path) -> Iterator[Cluster]:
    """A head and a worker node (1 CPU each) with the S3 environment and node-local caches
    (tmp/cache-head, tmp/cache-worker)."""
    import ray

    gcs, dash, client, *node_ports = free_ports(7)
    address = f"{ray.util.get_node_ip_address()}:{gcs}"
    token = secrets.token_hex(32)
    # RAY_ADDRESS in the nodes' environment: Train's placement-group cleaner asks this cluster
    env = subprocess_env(**s3, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_ADDRESS=address)
    cluster = Cluster(address, {**env, "THORAXMAE_CACHE_DIR": str(tmp_path / "cache-driver")}, [])
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name, (agent, metrics) in zip(NODES, (node_ports[0:2], node_ports[2:4]), strict=True):
            where = (["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                      str(dash),
                      "--ray-client-server-port", str(client)] if name == "head" else ["--address", address])
            # short: socket paths
            cluster.temp_dirs.append(Path(tempfile.mkdtemp(prefix=f"r{name[0]}", dir="/tmp")))
            cmd = [RAY, "start", *where, "--num-cpus", "1", "--object-store-memory", NODE_MEMORY,
                   "--dashboard-agent-listen-port", str(agent), "--metrics-export-port", str(metrics),
                   "--temp-dir", str(cluster.temp_dirs[-1]), "--block"]
            log = tmp_path / f"{name}.log"
            logs.append(log.open("w"))
            procs.append(subprocess.Popen(cmd, stdout=logs[-1], stderr=subprocess.STDOUT,
                                          start_new_session=True,
                                          env={**env,
                                               "THORAXMAE_CACHE_DIR": str(tmp_path / f"cache-{name}")}))
            _wait(lambda log=log: "Ray runtime started" in log.read_text(), procs, tmp_path,
                  f"the {name} node")
        _wait(lambda: _active_nodes(address, env) == 2, procs, tmp_path, "2 active nodes")
        yield cluster
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        for log in logs:
            log.close()
        for folder in cluster.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def _wait(ready, procs: list[subprocess.Popen], tmp_path: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for proc, name in zip(procs, NODES, strict=False):  # the nodes started so far
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.5)


def _tail(path: Path) -> str:
    return path.read_text()[-4000:]


def test_pipeline_study_on_s3_resumes_after_the_driver_is_killed(s3_cluster, phantom_store, tmp_path):
    name, storage, store = "s3cluster", f"s3://{BUCKET}/tune", f"s3://{BUCKET}/stores/nih64"
    upload_store(phantom_store, store)
    spec = tiny_spec(phantom_store, tmp_path, name, stage="pipeline", num_samples=2, concurrent=2)
    spec["data"]["store"], spec["storage_path"] = store, storage
    spec["search"]["scheduler"] = {"type": "none"}  # every trial runs all its epochs: exact histories
    spec["pretrain"].update(epochs=PRETRAIN_EPOCHS, checkpoint_every=1)
    spec["finetune"]["epochs"] = FINETUNE_EPOCHS
    uri = spec["tracking"]["uri"]  # SQLite in tmp: the driver is the only MLflow writer
    work = tmp_path / "cwd"  # the drivers' working folder: the old bug folded s3:// into a local path here
    work.mkdir()
    spec_file = write_spec(spec, tmp_path / "spec.yaml")
    root = Location.of(storage)
    train = root / name / "train"

    log = (tmp_path / "run.log").open("w")
    driver = subprocess.Popen([*CLI, "study", "run", str(spec_file)], env=s3_cluster.env, cwd=work,
                              stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:  # killed once a fine-tuning epoch's checkpoint is on S3: resume continues that Train run from there
        deadline = time.monotonic() + 300
        while not any(c.parent.parent.name.endswith("-finetune") for c in train.walk_files(CHECKPOINT_FILE)):
            assert driver.poll() is None, (f"the study ended (rc {driver.returncode}) early:\n"
                                           f"{_tail(tmp_path / 'run.log')}")
            assert time.monotonic() < deadline, ("no fine-tuning checkpoint on S3:\n"
                                                 f"{_tail(tmp_path / 'run.log')}")
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        log.close()
    assert driver.returncode == -signal.SIGKILL, "the study ended before it could be killed"

    resumed = subprocess.run([*CLI, "study", "resume", name, "--tracking-uri", uri, "--storage-path",
                              storage],
                             env=s3_cluster.env, cwd=work, capture_output=True, text=True, timeout=400,
                             check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # MLflow: both trials completed, every epoch logged exactly once
    runs = trial_runs(uri, name)
    assert len(runs) == 2
    failed = [r.data.tags.get(schema.TAG_ERROR) for r in runs
              if r.data.tags[schema.TAG_STATUS] != schema.STATUS_COMPLETED]
    assert not failed, "\n\n".join(map(str, failed)) + resumed.stdout[-3000:]
    epochs = list(range(1, FINETUNE_EPOCHS + 1))
    for run in runs:
        for key in (schema.M_VAL_MAUC, schema.M_TRAIN_LOSS):
            assert [s for s, _ in history(uri, run.info.run_id, key)] == epochs, (key, run.data.tags)
    pretrains = _runs(uri, name, schema.ROLE_PRETRAIN)
    assert len(pretrains) == 2  # two recipes (mask ratios), each pre-trained once
    for run in pretrains:
        steps = [s for s, _ in history(uri, run.info.run_id, schema.M_PRETRAIN_LOSS)]
        assert steps == list(range(1, PRETRAIN_EPOCHS + 1))

    # S3: Tune's folder, the Train runs with their final markers, the registry, the checkpoints
    assert (root / name / SPEC_FILE).is_file()
    assert (root / name).walk_files("tuner.pkl")
    for run in runs:
        marker = train / f"train-{run.data.tags[schema.TAG_TRIAL_ID]}-finetune" / FINAL_MARKER
        assert marker.is_file(), marker
        checkpoint = json.loads(marker.read_text())["checkpoint"]
        assert checkpoint.startswith(f"{train}/"), checkpoint
        assert (Location.of(checkpoint) / CHECKPOINT_FILE).is_file()
    entries = (root / REGISTRY_DIR).walk_files(ENTRY_FILE)
    assert len(entries) == 2
    for entry in entries:
        checkpoint = json.loads(entry.read_text())["checkpoint"]
        assert (checkpoint.startswith(f"{entry.parent}/pretrain/")
                and Location.of(checkpoint).is_file()), checkpoint

    # nothing of the study on a local disk: not in the drivers' folder, not in tmp, not in the nodes' folders
    caches = {tmp_path / f"cache-{n}" for n in (*NODES, "driver")}
    local = [p for folder in (tmp_path, *s3_cluster.temp_dirs) for p in folder.rglob("*")
             if not caches & set(p.parents)]
    assert not [p for p in local if p.name.startswith("s3:")]
    assert not [p for p in local
                if p.name in (FINAL_MARKER, ENTRY_FILE, CHECKPOINT_FILE, SPEC_FILE, REGISTRY_DIR)]
    # each node fetched the store into its own cache: the two concurrent trials ran one per node
    content_hash = json.loads((phantom_store / "manifest.json").read_text())["content_hash"]
    for node in NODES:
        assert (tmp_path / f"cache-{node}" / content_hash).is_dir(), node
    # fine-tuning's encoder came from S3 through a node's file cache
    assert [p for n in NODES for p in (tmp_path / f"cache-{n}").glob(f"file-*/{CHECKPOINT_FILE}")]


def _runs(uri: str, experiment: str, role: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = '{role}'")
