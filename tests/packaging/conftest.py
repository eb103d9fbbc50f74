"""The wheel built from a copy of the checkout, once per session (the build writes `build/` and `*.egg-info`
next to the sources; the shared checkout stays untouched). Every folder pyproject maps into the package
(`[tool.setuptools.package-dir]`) is copied, so what the wheel holds is what pyproject declares."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIP_ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def run(cmd: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on a non-zero exit, fail with the ends of its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=timeout,
                          **kwargs)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd[:5]))} ...\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def package_folders() -> set[str]:
    """The repository folders that pyproject maps into the installed package."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {folder.split("/")[0] for folder in setuptools.get("package-dir", {}).values()}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / file, src / file)
    for folder in package_folders():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
         tmp / "dist", src], env=PIP_ENV, cwd=tmp)
    (built,) = (tmp / "dist").glob("thoraxmae-*.whl")
    return built
