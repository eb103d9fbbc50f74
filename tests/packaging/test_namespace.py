"""One namespace (docs/architecture.md): the four folders install as thoraxmae.datasets, thoraxmae.trainers,
thoraxmae.study and thoraxmae.analysis, so the project lives beside another package named `datasets` (Hugging
Face's has a `datasets/config.py` too) without either shadowing the other.

The wheel is built from a copy of the checkout's sources (the build writes `build/` and `*.egg-info` next to
them; the shared checkout stays untouched), installed with `pip install --target` next to a stand-in
`datasets`, and imported from there with the editable install out of the way. The editable install of this
checkout (.venv) is checked with the stand-in first on sys.path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("datasets", "trainers", "study", "analysis")
FAKE_CONFIG = ('ORIGIN = "stand-in"\n\n\n'
               'class DownloadConfig:  # what HF datasets.config holds instead of DataConfig\n    pass\n')
PIP_ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

# Imports both packages and prints where each came from (run with the stand-in and the install on sys.path).
PROBE = """
import json, sys
import datasets.config as other
from thoraxmae.datasets.config import DataConfig
import thoraxmae.datasets.config as ours
import thoraxmae.trainers.config as trainers_config
print(json.dumps({"other": other.__file__, "origin": other.ORIGIN, "has_data_config": hasattr(other, "DataConfig"),
                  "ours": ours.__file__, "trainers": trainers_config.__file__,
                  "store": str(DataConfig(store="nih256").store),
                  "bare": sorted(n for n in ("study", "trainers", "analysis") if n in sys.modules)}))
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    site: Path  # pip install --target: the wheel's files + the stand-in `datasets`


def layout() -> dict[str, str]:
    """The repository's folders and where they belong in the installed package (the layout users see)."""
    return {"thoraxmae": "thoraxmae", **{p: f"thoraxmae/{p}" for p in SUBPACKAGES}}


def source_modules() -> set[str]:
    """Every .py file of the four folders and the shell, as its path inside the installed `thoraxmae`."""
    out = set()
    for folder, installed_as in layout().items():
        for file in (ROOT / folder).rglob("*.py"):
            rel = file.relative_to(ROOT / folder)
            if "__pycache__" not in rel.parts:
                out.add(f"{installed_as}/{rel.as_posix()}")
    return out


def write_stand_in(parent: Path) -> Path:
    (parent / "datasets").mkdir(parents=True)
    (parent / "datasets" / "__init__.py").write_text('"""A stand-in for another project\'s `datasets`."""\n')
    (parent / "datasets" / "config.py").write_text(FAKE_CONFIG)
    return parent


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd[:4])} ...\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Installed:
    site = tmp_path_factory.mktemp("install") / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
         str(wheel)],
        env=PIP_ENV, cwd=site.parent)
    assert not (site / "datasets").exists(), ("the wheel installs a top-level `datasets`: "
                                              "it clashes with others'")
    write_stand_in(site)
    return Installed(wheel, site)


def test_wheel_holds_one_namespace(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        top_level = whl.read(next(n for n in names
                                  if n.endswith(".dist-info/top_level.txt"))).decode().split()
        entry_points = whl.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"thoraxmae"}
    assert top_level == ["thoraxmae"]
    assert "thoraxmae = thoraxmae.cli:main" in entry_points
    for pkg in SUBPACKAGES:
        assert f"thoraxmae/{pkg}/__init__.py" in names
    missing = sorted(source_modules() - set(names))
    assert missing == [], "modules of the checkout the wheel leaves out (a folder missing from `packages`?)"
    assert {"thoraxmae/datasets/config.py", "thoraxmae/study/spec/model.py",
            "thoraxmae/datasets/sources/nih.py",
            "thoraxmae/trainers/models/mae.py", "thoraxmae/analysis/report.py"} <= set(names)


def test_wheel_install_beside_another_datasets(installed):
    purelib = sysconfig.get_paths()["purelib"]  # the venv's dependencies (pydantic), without its .pth hooks
    code = f"import sys; sys.path[:0] = [{str(installed.site)!r}, {purelib!r}]\n{PROBE}"
    out = json.loads(run([sys.executable, "-I", "-S", "-c", code], cwd=installed.site.parent).stdout)
    site = str(installed.site)
    assert out["other"] == f"{site}/datasets/config.py"
    assert (out["origin"], out["has_data_config"]) == ("stand-in", False)
    assert out["ours"] == f"{site}/thoraxmae/datasets/config.py"
    assert out["trainers"] == f"{site}/thoraxmae/trainers/config.py"
    assert out["store"] == "nih256"
    assert out["bare"] == []


def test_editable_install_with_another_datasets_first(tmp_path):
    stand_in = write_stand_in(tmp_path / "first")
    env = {**os.environ, "PYTHONPATH": str(stand_in)}
    out = json.loads(run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env).stdout)
    assert out["other"] == f"{stand_in}/datasets/config.py"
    assert (out["origin"], out["has_data_config"]) == ("stand-in", False)
    assert Path(out["ours"]).parts[-2:] == ("datasets", "config.py")
    assert not out["ours"].startswith(str(stand_in))
    assert out["store"] == "nih256"
    assert out["bare"] == []
