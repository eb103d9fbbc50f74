"""Fixtures of the integration suite: fail-fast Ray Train settings, the session's Ray, and one run of the
default demo (the recipe tournament) that the browser and tournament tests share."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import TEST_ENV, subprocess_env

DEMO_TIMEOUT_S = 1200  # the default demo is a 4-recipe tournament: ~5 min on 2 idle CPUs, more when shared


@pytest.fixture(autouse=True)
def _fail_fast_env(monkeypatch):
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture()
def study_ray(request):
    """The session's Ray, started through study.run.ray_local.init_ray when no test started it before, so its
    processes carry RAY_ADDRESS (see init_ray: other Rays on this machine must not confuse Train)."""
    import ray

    from thoraxmae.study.run.ray_local import init_ray

    if not ray.is_initialized():
        init_ray(num_cpus=2, object_store_memory=200 * 1024**2)
    return request.getfixturevalue("ray_session")


@dataclass(frozen=True)
class Demo:
    out: Path
    uri: str
    report: Path
    study: str
    experiment_id: str

    @property
    def storage_path(self) -> Path:
        return self.out / "studies"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Demo:
    """`thoraxmae demo --n 300` (the README's `make demo`: the recipe tournament of
    configs/demo-tournament.yaml, 4 recipes, rungs [1, 2], k = 2) in a fresh folder, as a user runs it; once
    per session (tests/integration/test_browser.py, test_tournament.py)."""
    out = tmp_path_factory.mktemp("demo")
    cmd = [str(Path(sys.executable).with_name("thoraxmae")), "demo", "--out", str(out), "--n", "300",
           "--trials", "2",
           "--confirm-seeds", "0"]  # the confirmation path: tests/integration/test_confirm.py
    done = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=DEMO_TIMEOUT_S,
                          check=False)
    said = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, said
    printed = re.search(r"^report\s+(\S+)$", done.stdout, re.MULTILINE)
    assert printed, f"the demo did not print its report path\n{said}"
    report = Path(printed.group(1))
    assert report.is_file() and report.is_relative_to(out), report
    uri = f"sqlite:///{out / 'mlflow.db'}"
    experiments = [e for e in MlflowClient(uri).search_experiments() if e.name != "Default"]
    assert len(experiments) == 1, [e.name for e in experiments]
    return Demo(out, uri, report, experiments[0].name, experiments[0].experiment_id)
