"""The invocations that used to end in a traceback: each is now one `error: ...` line naming the culprit and
the right exit code (2: bad input, refused before anything runs; 1: a run that failed), with Ray never started
where the refusal comes before it (init_ray is a tripwire). Real file systems (tmpfs mounts where a read-only
one is needed), a real S3 server (moto), real sockets."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.study_helpers import CLI
from tests.reliability.test_bad_inputs import spec_dict, write_spec
from tests.reliability.test_bad_outputs import tmpfs
from tests.s3_server import BUCKET, moto_server, serve
from thoraxmae.cli import main
from thoraxmae.study.run.ray_local import free_ports, restore_env

pytestmark = pytest.mark.usefixtures("no_ray")  # tests/reliability/conftest.py


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# --- the spec ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "override", "message"), [
    ("[" * 5000, None, r"s\.yaml: nested too deeply; a spec nests at most 32 levels"),
    (f"name: x\nsearch: {deep(5000)}\n", None, r"s\.yaml: nested too deeply"),
    (f"name: x\nsearch: {deep(40)}\n", None, r"s\.yaml: nested too deeply"),  # parses, but deeper than a spec
    (None, f"search.space={deep(5000)}", r"--set search\.space: value nested too deeply"),
])
def test_a_spec_nested_thousands_of_levels_deep_is_one_line(work, capsys, text, override, message):
    spec = work / "s.yaml"
    if text is None:
        write_spec(spec, spec_dict(work))
    else:
        spec.write_text(text)
    code = main(["study", "run", str(spec), *(["--set", override] if override else [])])
    line = one_line(capsys)
    assert code == 2 and line.startswith("error: ") and re.search(message, line), line


# --- storage_path: checked before Ray, creating nothing
# -------------------------------------------------------
@contextmanager
def moto_with_auth(log: Path) -> Iterator[dict[str, str]]:
    """A moto S3 server that checks credentials (no request is let through unsigned by a known key): the
    AWS_* keys the study uses are wrong for it."""
    (port,) = free_ports(1)
    cmd = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    saved = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # read by the server process at its start
    try:
        with serve(cmd, f"http://127.0.0.1:{port}/moto-api/", log, s3_env(port)) as env:
            yield env
    finally:
        restore_env({"INITIAL_NO_AUTH_ACTION_COUNT": saved})


def s3_env(port: int) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextmanager
def read_only_mount(tmp: Path) -> Iterator[str]:
    with tmpfs(tmp / "ro", "ro,size=1m") as mount:
        yield str(mount / "studies")


@contextmanager
def place(value: str) -> Iterator[str]:
    yield value


@contextmanager
def moto_bucket(tmp: Path, bucket: str) -> Iterator[str]:
    with moto_server(tmp / "moto.log"):
        yield f"s3://{bucket}/studies"


@contextmanager
def moto_wrong_credentials(tmp: Path) -> Iterator[str]:
    with moto_with_auth(tmp / "moto.log"):
        yield f"s3://{BUCKET}/studies"


@contextmanager
def endpoint_down(tmp: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    saved = {k: os.environ.get(k) for k in s3_env(port)}
    os.environ.update(s3_env(port))
    try:
        yield f"s3://{BUCKET}/studies"
    finally:
        restore_env(saved)


STORAGE_CASES = {
    "read-only": (read_only_mount, r"ro/studies \(Read-only file system\)"),
    "sys": (lambda tmp: place("/sys/studies"), r"/sys/studies \((Permission denied|Read-only file system)\)"),
    "a-file": (lambda tmp: place(str(tmp / "store" / "manifest.json")),
               r"manifest\.json \(\S+/manifest\.json is a file, not a folder\)"),
    "under-a-file": (lambda tmp: place(str(tmp / "store" / "manifest.json" / "studies")),
                     r"manifest\.json/studies \(\S+/manifest\.json is a file, not a folder\)"),
    "s3-wrong-credentials": (moto_wrong_credentials,
                             (r"s3://thoraxmae-test/studies \((INVALID_ACCESS_KEY_ID|ACCESS_DENIED) .*not "
                             r"exist in")),
    "s3-endpoint-down": (endpoint_down,
                         r"s3://thoraxmae-test/studies \(NETWORK_CONNECTION .*Could not connect to server\)"),
    "s3-missing-bucket": (lambda tmp: moto_bucket(tmp, "nobucket"),
                          r"s3://nobucket/studies \(NO_SUCH_BUCKET .*bucket does not exist\)"),
}


@pytest.mark.parametrize("case", STORAGE_CASES)
def test_an_unusable_storage_path_is_one_line_before_ray(work, capsys, case):
    where, message = STORAGE_CASES[case]
    with where(work) as storage:
        spec = write_spec(work / "s.yaml", spec_dict(work, storage_path=storage))
        before = sorted(p.name for p in work.iterdir())
        code = main(["study", "run", str(spec)])
        line = one_line(capsys)
    assert code == 2, line
    assert line.startswith("error: storage_path: cannot write to ") and re.search(message, line), line
    assert line.endswith("give a folder or object-store URI this machine and every node can write "
                         "(--set storage_path=...)"), line
    assert sorted(p.name for p in work.iterdir()) == before  # no MLflow database, no Tune folder


# --- ui: the port, checked before MLflow starts
# ----------------------------------------------------------------
@pytest.mark.parametrize(("port", "message"), [
    ("-1", r"--port -1: expected a port from 1 to 65535"),
    ("70000", r"--port 70000: expected a port from 1 to 65535"),
    ("in-use", (r"--port (\d+): 127\.0\.0\.1:\1 is in use \(another `thoraxmae ui` or MLflow server\?\); "
                r"choose a "
               r"free port with --port")),
])
def test_ui_on_an_unusable_port_is_one_line_and_exit_2(work, capsys, monkeypatch, port, message):
    from thoraxmae.cli import ui as cli_ui

    monkeypatch.setattr(cli_ui, "serve", lambda cmd, env: pytest.fail(f"MLflow started: {cmd}"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if port == "in-use":
            port = str(taken.getsockname()[1])
        code = main(["ui", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--port", port])
        line = one_line(capsys)
    assert code == 2 and re.fullmatch(f"error: {message}", line), line


# --- the tracking database fills up under a running study
# ---------------------------------------------------------
@pytest.mark.integration
def test_a_tracking_database_that_fills_up_is_one_line_and_exit_1(phantom_store, tmp_path):
    from mlflow import MlflowClient

    from tests.integration.study_helpers import subprocess_env, tiny_spec
    from tests.integration.study_helpers import write_spec as write_raw

    MlflowClient(f"sqlite:///{tmp_path / 'made.db'}").search_experiments()  # a database, made off the mount
    with tmpfs(tmp_path / "db", "size=3m") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        shutil.copy(tmp_path / "made.db", mount / "mlflow.db")  # nothing of this process holds it open
        with contextlib.suppress(OSError), (mount / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
        spec = write_raw(tiny_spec(phantom_store, tmp_path, "dbfull", num_samples=1, uri=uri),
                         tmp_path / "s.yaml")
        done = subprocess.run([*CLI, "study", "run", str(spec)],
                              capture_output=True,
                              text=True, cwd=tmp_path, env=subprocess_env(), timeout=600, check=False)
    out = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert errors == [(f"error: study dbfull: the tracking store {uri} failed ((sqlite3.OperationalError) "
                       "database or disk is full); the study stopped. What was logged is kept: fix the store "
                       "(free space), then `thoraxmae study resume dbfull --tracking-uri "
                       f"{uri}`")], out[-3000:]
