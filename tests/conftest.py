"""Shared fixtures: a tiny phantom ChestX-ray14 set in the real NIH layout, its prepared store,
an MLflow SQLite URI, one session-scoped local Ray for the integration tests, and a module-scoped S3
server (moto, tests/s3_server.py) for the tests of object storage."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY_SIZE = 64  # store side in pixels; the tiny ViT reads 64 px, patch 8


def write_store_manifest(folder: Path) -> Path:
    """An image-less store whose manifest passes the spec's store check (format version, keys), for
    tests of specs that never read an image. Returns the folder."""
    from thoraxmae.datasets.store import FORMAT_VERSION

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "size": TINY_SIZE, "label_names": ["Edema"],
                "task": "multilabel", "shards": []}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="session")
def phantom_nih(tmp_path_factory) -> Path:
    """A 240-image phantom NIH folder (PNG files, Data_Entry csv, train_val_list/test_list)."""
    from thoraxmae.datasets.phantom import generate_phantom

    root = tmp_path_factory.mktemp("phantom_nih")
    generate_phantom(root, n=240, size=128, seed=0)
    return root


@pytest.fixture(scope="session")
def phantom_store(phantom_nih, tmp_path_factory) -> Path:
    """The phantom set prepared into a 64 px store (train/val/test splits)."""
    from thoraxmae.datasets.sources import load_source
    from thoraxmae.datasets.store import prepare_store

    out = tmp_path_factory.mktemp("store") / "nih64"
    table = load_source("nih", phantom_nih, split_seed=0)
    prepare_store(table, out, size=TINY_SIZE, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-compatible server for one test module; yields its AWS_* environment (set while it runs)."""
    from tests.s3_server import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield env


@pytest.fixture()
def mlflow_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole integration suite (2 CPUs, small object store), started as `study run`
    starts it (study.run.ray_local.init_ray: loopback only, dashboard on 127.0.0.1)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
    if not ray.is_initialized():
        from thoraxmae.study.run.ray_local import init_ray

        init_ray(num_cpus=2, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()
