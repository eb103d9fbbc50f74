"""An output folder that cannot take the result (`data prepare --out`, `report --out`): an existing file, a
read-only file system, a full disk. Each is one `error: ...` line naming the path and exit code 2 from
`thoraxmae`, never a traceback, and nothing is left behind (no `.tmp` shard, no half-written report).
Read-only and full file systems are real tmpfs mounts (skipped where this user cannot mount one)."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.unit.analysis import synthetic as syn
from thoraxmae.cli import main


@contextmanager
def tmpfs(mountpoint: Path, options: str) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                          capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@contextmanager
def existing_file(tmp: Path) -> Iterator[Path]:
    (tmp / "a-file").write_text("not a folder")
    yield tmp / "a-file"


@contextmanager
def under_a_file(tmp: Path) -> Iterator[Path]:
    (tmp / "a-file").write_text("not a folder")
    yield tmp / "a-file" / "out"


@contextmanager
def read_only(tmp: Path) -> Iterator[Path]:
    with tmpfs(tmp / "ro", "ro,size=1m") as mount:
        yield mount / "out"


def full_disk(size: str):
    @contextmanager
    def place(tmp: Path) -> Iterator[Path]:
        with tmpfs(tmp / "full", f"size={size}") as mount:
            yield mount / "out"
    return place


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else []


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    # (a log line of the source may precede it)
    assert len(err) <= 2 and "Traceback" not in "\n".join(err), err
    return err[-1]


# --- data prepare --out
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("place", "message"), [
    (existing_file, r"a-file: exists and is not a folder; give another store folder \(--out\)"),
    (under_a_file, r"a-file/out: cannot write the store folder \(--out\) here \(Not a directory\)"),
    (read_only, r"ro/out: cannot write the store folder \(--out\) here \(Read-only file system\)"),
    (full_disk("512k"), (r"full/out/shards/shard-00000\.arrow: cannot write store shard \(no space left on "
                         r"the "
                        r"device\)")),
])
def test_prepare_to_an_unusable_out_is_one_line_and_leaves_nothing(phantom_nih, tmp_path, capsys, place,
                                                                   message):
    with place(tmp_path) as out:
        code = main(["data", "prepare", str(phantom_nih), "--format", "nih", "--out", str(out), "--size",
                     "64",
                     "--workers", "1", "--quiet"])
        line = one_line(capsys)
        assert code == 2
        assert line.startswith("error: ") and str(out) in line, line
        assert re.search(message, line), f"{message!r} not in {line!r}"
        mount = out.parent
        assert not list(mount.rglob("*.tmp")), files_under(mount)  # no partial shard
        assert not out.exists() or out.is_file()  # a folder it made for the failed run is gone


# --- report --out
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory) -> str:
    """A finished 8-trial pipeline study in a real SQLite MLflow (tests/unit/analysis/synthetic.py)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    syn.write_study(uri, "s8", syn.simulate_trials(8, seed=0), root / "artifacts")
    return uri


@pytest.mark.parametrize(("place", "message"), [
    (existing_file, r"a-file: exists and is not a folder; give another report folder \(--out\)"),
    (under_a_file, r"a-file/out: cannot write the report folder \(--out\) here \(Not a directory\)"),
    (read_only, r"ro/out: cannot write the report folder \(--out\) here \(Read-only file system\)"),
    (full_disk("64k"), r"full/out: cannot write the report \(no space left on the device\)"),
])
def test_report_to_an_unusable_out_is_one_line_and_leaves_nothing(study, tmp_path, capsys, place, message):
    with place(tmp_path) as out:
        code = main(["report", "s8", "--tracking-uri", study, "--out", str(out), "--bootstrap", "0",
                     "--no-log"])
        line = one_line(capsys)
        assert code == 2
        assert line.startswith("error: ") and str(out) in line, line
        assert re.search(message, line), f"{message!r} not in {line!r}"
        assert not out.is_dir(), files_under(out)  # no history.png, no staging folder


def test_a_report_that_fails_on_a_full_disk_keeps_the_earlier_report(study, tmp_path, capsys):
    with tmpfs(tmp_path / "full", "size=2m") as mount:
        out = mount / "out"
        assert main(["report", "s8", "--tracking-uri", study, "--out", str(out), "--bootstrap", "0",
                     "--no-log"]) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        filler = mount / "filler"
        with filler.open("wb", buffering=0) as f:  # fill the disk
            while True:
                try:
                    f.write(b"\0" * 4096)
                except OSError:
                    break
        capsys.readouterr()
        assert main(["report", "s8", "--tracking-uri", study, "--out", str(out), "--bootstrap", "0",
                     "--no-log"]) == 2
        assert "no space left on the device" in one_line(capsys)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier report, whole
