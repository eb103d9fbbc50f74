"""Fixtures of the reliability tests that refuse bad input before any Ray work."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_store_manifest


@pytest.fixture()
def no_ray(monkeypatch):
    """Ray must never start for an invocation that should be refused before it; MLflow's default URI must not
    leak in from the environment. Modules use it with `pytestmark = pytest.mark.usefixtures("no_ray")`."""
    from thoraxmae.study.run import ray_local

    def tripwire(**_):
        raise AssertionError("Ray started for an invocation that should have been refused before it")

    monkeypatch.setattr(ray_local, "init_ray", tripwire)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    """A working directory with a prepared store's manifest at ./store."""
    monkeypatch.chdir(tmp_path)
    write_store_manifest(tmp_path / "store")
    return tmp_path
