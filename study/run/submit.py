"""`thoraxmae study submit`: run a study as a Ray job on a cluster (Ray Jobs API).

The job's working_dir is a staging folder holding the resolved spec (`spec.yaml`, absolute paths,
which must be valid on the cluster: a shared data store and storage path, a tracking URI the head
node can reach); the `thoraxmae` package (its four sub-packages assembled under one folder, exactly as
a wheel lays them out) travels as one py_module, so the cluster runs this exact code and nothing named
`datasets` or `study` is shadowed there. The entrypoint is `python -m thoraxmae study run spec.yaml`; inside a
job RAY_ADDRESS is set, so the
study joins the cluster. Token authentication (Ray >= 2.59 clusters) is handled by Ray's client
from RAY_AUTH_MODE=token plus RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.load import dump_spec, load_spec
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.tracking.uri import check_scheme

log = logging.getLogger(__name__)
SUBPACKAGES = ("datasets", "trainers", "study", "analysis")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def stage_package(dest: Path) -> Path:
    """Copy the installed `thoraxmae` (shell + its four sub-packages, wherever each folder lives) to
    dest/thoraxmae.
    The folders are located (importlib.util.find_spec), not imported: only thoraxmae/cli/__init__.py composes
    packages."""
    import importlib.util
    import shutil

    def folder(package: str) -> Path:
        return Path(next(iter(importlib.util.find_spec(package).submodule_search_locations)))

    out = dest / "thoraxmae"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(folder("thoraxmae"), out, ignore=ignore, dirs_exist_ok=True)
    for name in SUBPACKAGES:
        shutil.copytree(folder(f"thoraxmae.{name}"), out / name, ignore=ignore, dirs_exist_ok=True)
    return out


def job_entrypoint(python: str = "python") -> str:
    return f"{python} -m thoraxmae study run spec.yaml"


def runtime_env(spec: StudySpec, staging: Path) -> dict:
    (staging / "job").mkdir(parents=True, exist_ok=True)
    (staging / "job" / "spec.yaml").write_text(dump_spec(spec))
    package = stage_package(staging / "package")
    env_vars = {k: os.environ[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
                if k in os.environ}
    return {"working_dir": str(staging / "job"), "py_modules": [str(package)], "env_vars": env_vars}


def submit_study(spec_path: Path | str, address: str, overrides: list[str] | None = None,
                 python: str = "python") -> str:
    """Validate the spec here (except the data store, which lives on the cluster), submit, return the job
    id."""
    spec = load_spec(spec_path, overrides, check_files=False)
    check_scheme(spec.tracking.uri)  # a folder or an unknown scheme fails here, not on the cluster
    if spec.tracking.uri.startswith("sqlite:"):
        log.warning("tracking.uri %s is a SQLite file: it must be on a path the cluster's head node can "
                    "write",
                    spec.tracking.uri)
    client = connect(address)
    with tempfile.TemporaryDirectory(prefix="thoraxmae-job-") as tmp:
        job_id = client.submit_job(entrypoint=job_entrypoint(python),
                                   runtime_env=runtime_env(spec, Path(tmp)),
                                   submission_id=f"thoraxmae-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                   metadata={"thoraxmae.study": spec.name})
    log.info("submitted study %s as job %s to %s", spec.name, job_id, address)
    return job_id


def follow_job(address: str, job_id: str, poll_s: float = 2.0) -> Iterator[str]:
    """Yield the job's new log text as it comes, until the job ends; then yield nothing more."""
    client = connect(address)
    shown = 0
    while True:
        status = str(client.get_job_status(job_id).value)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            yield logs[shown:]
            shown = len(logs)
        if status in TERMINAL:
            return
        time.sleep(poll_s)


def job_status(address: str, job_id: str) -> str:

    return str(connect(address).get_job_status(job_id).value)


def connect(address: str):
    """A JobSubmissionClient; an unreachable or token-protected cluster becomes one clear error."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise SpecError(f"--address {address}: the cluster requires token authentication; set "
                        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH; a cluster started "
                        "on this machine uses ~/.ray/auth_token)") from None
    except ConnectionError as exc:
        raise SpecError(f"--address {address}: no Ray dashboard answers there ({exc})") from None


def check_address(address: str) -> str:
    if not address.startswith(("http://", "https://")):
        raise SpecError(f"--address {address!r}: expected the dashboard URL, e.g. http://HEAD:8265")
    return address
