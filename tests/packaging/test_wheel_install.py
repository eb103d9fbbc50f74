"""What an image or a cluster node gets: the wheel, installed with the lock into a fresh venv outside the
repository, runs `thoraxmae --help`, `data phantom` + `data prepare` and a one-trial study of the demo spec
that the wheel itself ships (deploy/image/smoke.sh, the same script `make image-check` runs in a container).

The image's steps are `pip install --require-hashes -r requirements.lock`, then the wheel. Here the lock's
packages are not downloaded again (torch alone is 5.5 GB): the fresh venv sees the ones `make venv`
installed from the same lock through a folder of links (everything of .venv's site-packages except
thoraxmae's own editable install), and the test proves that this set *is* the lock: every locked package
at its locked version, and `pip install --no-index --require-hashes` of the lock plus the wheel's hash
resolves with nothing left to fetch and nothing missing (`pip check`).
"""
from __future__ import annotations

import json
import re
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.conftest import PIP_ENV, ROOT, run

LOCK = ROOT / "requirements.lock"
SMOKE = ROOT / "deploy" / "image" / "smoke.sh"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
OURS = re.compile(r"^(__editable__\.?_?thoraxmae|thoraxmae)", re.IGNORECASE)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: Path = LOCK) -> dict[str, str]:
    return {normalize(name): version for name, version in PIN.findall(lock.read_text())}


@dataclass(frozen=True)
class Fresh:
    root: Path  # the venv
    site: Path  # its site-packages (the wheel goes here)
    python: Path
    env: dict[str, str]  # PATH starts with the venv; no PYTHONPATH; outside the repository

    def pip(self, *args: str | Path, timeout: float = 300) -> str:
        return run([self.python, "-m", "pip", *args], env=self.env, cwd=self.root, timeout=timeout).stdout


def link_locked_packages(target: Path) -> Path:
    """A folder of links to this venv's installed packages, thoraxmae's own (editable) install left out."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for entry in purelib.iterdir():
        if not OURS.match(entry.name) and entry.suffix != ".pth":
            (target / entry.name).symlink_to(entry)
    return target


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> Fresh:
    tmp = tmp_path_factory.mktemp("fresh")
    root = tmp / "venv"
    run([Path(sysconfig.get_paths()["scripts"]) / "python", "-m", "venv", "--without-pip", root])
    site = Path(run([root / "bin" / "python", "-c", ("import sysconfig; "
                                                    "print(sysconfig.get_paths()['purelib'])")]
                    ).stdout.strip())
    (site / "locked-packages.pth").write_text(f"{link_locked_packages(tmp / 'locked')}\n")
    # pip itself from the locked folder (the venv has none of its own): the image's pip is the base's
    env = {k: v for k, v in PIP_ENV.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{root / 'bin'}:{env['PATH']}"
    return Fresh(root, site, root / "bin" / "python", env)


@pytest.fixture(scope="module")
def installed(fresh, wheel) -> Fresh:
    digest = run(["sha256sum", wheel]).stdout.split()[0]
    requirements = fresh.root / "requirements.txt"
    requirements.write_text(f"{LOCK.read_text()}\nthoraxmae @ {wheel.as_uri()} --hash=sha256:{digest}\n")
    t0 = time.monotonic()
    out = fresh.pip("install", "--no-index", "--require-hashes", "-r", requirements)
    print(f"wheel + lock installed in {time.monotonic() - t0:.1f} s")
    version = wheel.name.split("-")[1]
    assert re.findall(r"Successfully installed (.*)", out) == [f"thoraxmae-{version}"], out[-2000:]
    return fresh


def test_the_fresh_venv_holds_exactly_the_lock(fresh):
    code = ("import json, importlib.metadata as m; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    seen = {normalize(n): v for n, v in json.loads(run([fresh.python, "-c", code], env=fresh.env,
                                                        cwd=fresh.root).stdout).items()}
    pins = locked()
    wrong = {name: (version, seen.get(name)) for name, version in pins.items() if seen.get(name) != version}
    assert wrong == {}, "locked version vs the one the fresh venv sees"
    assert "thoraxmae" not in seen, "the checkout's editable install leaked into the fresh venv"


def test_the_wheel_installs_with_the_lock_and_nothing_else(installed, wheel):
    installed.pip("check")
    where = run([installed.python, "-c", "import thoraxmae, sys; print(thoraxmae.__file__)"],
                env=installed.env, cwd=installed.root).stdout.strip()
    assert where == str(installed.site / "thoraxmae" / "__init__.py")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    shipped = {n for n in names if n.startswith("thoraxmae/configs/") and n.endswith(".yaml")}
    assert shipped == {f"thoraxmae/configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")}


def test_the_installed_cli_runs_a_one_trial_study(installed, tmp_path):
    out = tmp_path / "smoke"
    env = {**installed.env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
           "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    help_text = run(["thoraxmae", "--help"], env=env, cwd=tmp_path).stdout
    assert "study" in help_text and "data" in help_text
    t0 = time.monotonic()
    proc = run(["bash", SMOKE, installed.site / "thoraxmae" / "configs", out], env=env, cwd=tmp_path,
               timeout=420)
    print(f"smoke study in {time.monotonic() - t0:.1f} s")
    assert (out / "store" / "manifest.json").is_file()
    assert re.search(r"1 completed", proc.stdout), proc.stdout[-3000:]
    code = ("import mlflow, sys; from thoraxmae.study import schema; c = mlflow.MlflowClient(sys.argv[1]); "
            "e = c.get_experiment_by_name('smoke'); "
            "r = c.search_runs([e.experiment_id], filter_string=f\"tags.`{schema.TAG_ROLE}` = "
            "'{schema.ROLE_TRIAL}'\"); print([(x.data.tags.get(schema.TAG_STATUS), 'val/mauc' in "
            "x.data.metrics) for x in r])")
    runs = run([installed.python, "-c", code, f"sqlite:///{out / 'mlflow.db'}"], env=env, cwd=tmp_path).stdout
    assert runs.strip() == "[('completed', True)]"
