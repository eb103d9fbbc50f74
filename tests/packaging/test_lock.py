"""Reproducible installs: pyproject's bounds, the hashed locks `make lock` makes from them, and `make venv`,
which installs the test lock and refuses, in one line naming `make lock`, a lock made from another
dependency table. The venv this suite runs in is the lock: every locked package at its locked version."""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.packaging.conftest import ROOT
from tests.packaging.test_wheel_install import locked, normalize

LOCKS = ("requirements.lock", "requirements-test.lock")
BOUNDED = ("ray", "mlflow", "optuna", "timm", "pandas", "pyarrow", "pydantic")


def requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {normalize(r.name): r for r in map(Requirement, deps)}


def make_venv_in_copy(tmp_path, edit=None) -> subprocess.CompletedProcess:
    """`make venv` in a copy of the files it reads, with the venv inside the copy."""
    (tmp_path / ".ci").mkdir()
    for name in ("Makefile", "pyproject.toml", ".ci/lock.py", *LOCKS):
        shutil.copy2(ROOT / name, tmp_path / name)
    if edit:
        edit(tmp_path)
    # as a user's own `make venv`, not one nested in `make test` (which would print make[1]'s directory lines)
    nested = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in nested}
    return subprocess.run(["make", "venv", f"VENV={tmp_path / 'venv'}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def test_the_locks_match_pyproject():
    proc = subprocess.run(["python3", ".ci/lock.py", "check", *LOCKS], cwd=ROOT, capture_output=True,
                          text=True,
                          check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@pytest.mark.parametrize("change", ["dependency", "missing lock"])
def test_make_venv_refuses_a_stale_lock_in_one_line(tmp_path, change):
    def edit(copy):
        if change == "missing lock":
            (copy / "requirements-test.lock").unlink()
        else:
            pyproject = copy / "pyproject.toml"
            pyproject.write_text(pyproject.read_text().replace('"rich>=13.0"', '"rich>=14.0"'))

    proc = make_venv_in_copy(tmp_path, edit)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1, lines
    assert re.search(r"requirements(-test)?\.lock (does not match|is missing).*run `make "
                     r"lock`", lines[0]), lines
    assert not (tmp_path / "venv").exists(), "nothing installed from a stale lock"


def test_pyproject_bounds_admit_the_lock_and_stop_below_the_next_major():
    reqs, pins = requirements(), locked()
    assert Version(pins["ray"]) >= Version("2.60")
    for name in BOUNDED:
        spec, pin = reqs[name].specifier, Version(pins[name])
        assert pin in spec, f"{name} {pin} is outside pyproject's {spec}"
        assert any(s.operator == ">=" and Version(s.version) <= pin for s in spec), f"{name}: no lower bound"
        assert f"<{pin.major + 1}" in {str(s) for s in spec}, f"{name}: no upper bound below the next major"
    for name, requirement in reqs.items():
        assert name in pins and Version(pins[name]) in requirement.specifier, f"{name} missing from the lock"


def test_the_runtime_lock_is_the_test_lock_without_the_test_tools():
    runtime, test = locked(ROOT / "requirements.lock"), locked(ROOT / "requirements-test.lock")
    assert {name: test.get(name) for name in runtime} == runtime, "both locks pin the same versions"
    assert {"pytest", "moto"} <= set(test) - set(runtime)
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 3)[3])
    assert all("--hash=sha256:" in b for b in blocks if "==" in b), "every pin carries its hashes"


def test_this_venv_is_the_test_lock():
    installed = {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in locked(ROOT / "requirements-test.lock").items()
             if installed.get(n) != v}
    assert wrong == {}, "locked version vs installed (re-run `make venv`)"
