"""Fixtures of the integration suite: fail-fast Ray Train settings and the session's Ray."""
from __future__ import annotations

import pytest

from tests.integration.study_helpers import TEST_ENV


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
